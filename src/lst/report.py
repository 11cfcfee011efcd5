"""Tables across methods and phases, for files and for people."""

from __future__ import annotations

import pandas as pd

BASE = "base"  # the shared phase-0 model, listed under this method name
# AP by training-instance count, [low, high): the paper's "< 10 instances" claim among them
INSTANCE_BINS = (("AP<10", 0, 10), ("AP10-100", 10, 100), ("AP100-1000", 100, 1000), ("AP>=1000", 1000, float("inf")))


def summarize(entries: list[tuple[str, int, pd.DataFrame]]) -> pd.DataFrame:
    """Long table (method, phase, iou_type, metric, value) from each model's metrics table."""
    frames = [metrics.assign(method=method, phase=phase) for method, phase, metrics in entries]
    summary = pd.concat(frames, ignore_index=True)
    summary["phase"] = summary["phase"].astype("int32")
    return summary.sort_values(["method", "phase", "iou_type", "metric"], kind="stable").reset_index(drop=True)


def _percent(value: float) -> str:
    return "n/a" if value < 0 else f"{100 * value:.1f}"


def summary_markdown(summary: pd.DataFrame, dataset: str) -> str:
    """Mask AP of every method after every phase, then the final phase in detail."""
    segm = summary[summary["iou_type"] == "segm"]
    phases = sorted(segm["phase"].unique())
    methods = [m for m in dict.fromkeys(segm["method"]) if m != BASE]
    base = segm[segm["method"] == BASE].set_index("metric")["value"]
    last_phase = summary.groupby("method")["phase"].max()
    lines = [
        f"# {dataset}: results",
        "",
        "## Mask AP after each phase (phase 0 is the shared base model)",
        "",
    ]
    lines += [
        "| method | " + " | ".join(f"phase {p}" for p in phases) + " |",
        "|---" * (len(phases) + 1) + "|",
    ]
    for method in methods or [BASE]:
        rows = segm[(segm["method"] == method) & (segm["metric"] == "AP")].set_index("phase")["value"]
        # incremental methods start from the shared base model; joint baselines have only their own phase
        start = base.get("AP", -1) if 1 in rows.index else -1
        cells = [_percent(rows.get(p, start if p == 0 else -1)) for p in phases]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")

    last = max(phases)
    phase_columns = [f"AP_phase{j}" for j in range(last + 1)]
    sections = (
        (f"After the last phase (phase {last}), mask AP; AP_phase<j>: AP of phase j's classes",
         ["AP", "APr", "APc", "APf", *phase_columns]),
        ("After the last phase, mask AP of the classes with this many training instances",
         [name for name, _, _ in INSTANCE_BINS]),
    )  # fmt: skip
    for title, columns in sections:
        lines += ["", f"## {title}", ""]
        lines += ["| method | " + " | ".join(columns) + " | box AP |", "|---" * (len(columns) + 2) + "|"]
        for method in methods or [BASE]:
            final = summary[(summary["method"] == method) & (summary["phase"] == last_phase[method])]
            values = final[final["iou_type"] == "segm"].set_index("metric")["value"]
            box = final[final["iou_type"] == "bbox"].set_index("metric")["value"]
            cells = [_percent(values.get(c, -1)) for c in columns] + [_percent(box.get("AP", -1))]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
