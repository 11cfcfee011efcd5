"""Tables across methods and phases, for files and for people."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from lst.evaluation.lvis_eval import METRIC_KEYS
from lst.evaluation.phase_metrics import INSTANCE_BINS

BASE = "base"  # the shared phase-0 model, listed under this method name


def summarize(entries: list[tuple[str, int, pd.DataFrame]]) -> pd.DataFrame:
    """Long table (method, phase, iou_type, metric, value) from each model's metrics table."""
    frames = [metrics.assign(method=method, phase=phase) for method, phase, metrics in entries]
    summary = pd.concat(frames, ignore_index=True)
    summary["phase"] = summary["phase"].astype("int32")
    return summary.sort_values(["method", "phase", "iou_type", "metric"], kind="stable").reset_index(drop=True)


def _percent(value: float) -> str:
    return "n/a" if value < 0 else f"{100 * value:.1f}"


def base_models(bases: Mapping[str, str] | None) -> set[str]:
    """The names of the phase-0 models: the shared base and each incremental method's ``bases[method]``."""
    return {BASE, *(bases or {}).values()}


def summary_markdown(summary: pd.DataFrame, dataset: str, bases: Mapping[str, str] | None = None) -> str:
    """Mask AP of every method after every phase, then the final phase in detail. ``bases``: each method's
    phase-0 model (the ``base`` of report.models), the shared base where absent."""
    segm = summary[summary["iou_type"] == "segm"]
    phases = sorted(segm["phase"].unique())
    methods = [m for m in dict.fromkeys(segm["method"]) if m not in base_models(bases)]
    base_ap = segm[segm["metric"] == "AP"].groupby("method")["value"].first()  # the phase-0 models have one row
    last_phase = summary.groupby("method")["phase"].max()
    lines = [
        f"# {dataset}: results",
        "",
        "## Mask AP after each phase (phase 0 is the method's base model)",
        "",
    ]
    lines += [
        "| method | " + " | ".join(f"phase {p}" for p in phases) + " |",
        "|---" * (len(phases) + 1) + "|",
    ]
    for method in methods or [BASE]:
        rows = segm[(segm["method"] == method) & (segm["metric"] == "AP")].set_index("phase")["value"]
        # incremental methods start from their base model; joint baselines have only their own phase
        start = base_ap.get((bases or {}).get(method, BASE), -1) if 1 in rows.index else -1
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


def _cell(value: float) -> str:
    return "n/a" if not np.isfinite(value) or value < 0 else f"{100 * value:.1f}"


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _table(header: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def model_markdown(metrics: pd.DataFrame, per_class: pd.DataFrame, title: str) -> str:
    """One model's tables for people: overall LVIS metrics, AP of each phase's classes, AP by training
    instances and per-class AP, mask and box side by side, in percent ("n/a": no ground truth to score).

    ``metrics`` is the METRICS table (iou_type, metric, value), ``per_class`` the PER_CLASS one.
    """
    value = {(r.iou_type, r.metric): r.value for r in metrics.itertuples(index=False)}
    types = [t for t in ("segm", "bbox") if t in set(metrics["iou_type"])]
    ap_heads = [{"segm": "mask AP", "bbox": "box AP"}[t] for t in types]
    classes = per_class.drop_duplicates("category_id")
    with_gt = classes["num_gt"] > 0

    def cells(metric: str) -> list[str]:
        return [_cell(value.get((t, metric), -1.0)) for t in types]

    lines = [f"# {title}", "", "## Overall (percent)", ""]
    lines += _table(["metric", *(h.split()[0] for h in ap_heads)], ([k, *cells(k)] for k in METRIC_KEYS))

    lines += ["", "## AP of each phase's classes", ""]
    phases = sorted(int(p) for p in classes["phase"].unique())
    lines += _table(
        ["phase", "classes", "with val annotations", *ap_heads],
        (
            [
                p,
                int((classes["phase"] == p).sum()),
                int(((classes["phase"] == p) & with_gt).sum()),
                *cells(f"AP_phase{p}"),
            ]
            for p in phases
        ),
    )

    lines += ["", "## AP by training instances of the class", ""]
    rows = []
    for name, low, high in INSTANCE_BINS:
        in_bin = classes["instance_count"].between(low, high, inclusive="left")
        rows.append([name.removeprefix("AP"), int(in_bin.sum()), int((in_bin & with_gt).sum()), *cells(name)])
    lines += _table(["training instances", "classes", "with val annotations", *ap_heads], rows)

    lines += ["", "## Per-class AP, in training order", ""]
    ap = {(r.iou_type, int(r.category_id)): r.ap for r in per_class.itertuples(index=False)}
    ordered = classes.sort_values(["rank", "category_id"] if "rank" in classes.columns else ["phase", "category_id"])
    lines += _table(
        ["category_id", "name", "frequency", "phase", "training instances", "val annotations", *ap_heads],
        (
            [
                int(r.category_id),
                r.name,
                r.frequency,
                int(r.phase),
                int(r.instance_count),
                int(r.num_gt),
                *(_cell(ap.get((t, int(r.category_id)), float("nan"))) for t in types),
            ]
            for r in ordered.itertuples(index=False)
        ),
    )
    return "\n".join(lines) + "\n"
