"""Tables across methods and phases, for files and for people."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from lst.evaluation.lvis_eval import METRIC_KEYS
from lst.evaluation.phase_metrics import INSTANCE_BINS
from lst.reporting.stats import paired_difference, spread

BASE = "base"  # the shared phase-0 model, listed under this method name


def summarize(entries: list[tuple[int, str, int, pd.DataFrame]]) -> pd.DataFrame:
    """Long table (seed, method, phase, iou_type, metric, value) from each (seed, method, phase) model's metrics."""
    frames = [metrics.assign(seed=seed, method=method, phase=phase) for seed, method, phase, metrics in entries]
    summary = pd.concat(frames, ignore_index=True)
    summary[["seed", "phase"]] = summary[["seed", "phase"]].astype("int32")
    summary = summary[["seed", "method", "phase", "iou_type", "metric", "value"]]
    order = ["method", "phase", "iou_type", "metric", "seed"]
    return summary.sort_values(order, kind="stable").reset_index(drop=True)


def base_models(bases: Mapping[str, str] | None) -> set[str]:
    """The names of the phase-0 models: the shared base and each incremental method's ``bases[method]``."""
    return {BASE, *(bases or {}).values()}


def seed_values(
    summary: pd.DataFrame, method: str, phase: int, metric: str, iou_type: str = "segm"
) -> dict[int, float]:
    """{seed: value} of one figure of one model; a negative value (no class to score) is left out."""
    rows = summary[
        (summary["method"] == method) & (summary["phase"] == phase) & (summary["iou_type"] == iou_type)
        & (summary["metric"] == metric) & (summary["value"] >= 0)
    ]  # fmt: skip
    return dict(zip(rows["seed"].astype(int), rows["value"].astype(float), strict=True))


def _spread_cell(values: Mapping[int, float]) -> str:
    return spread(values.values()).percent() if values else "n/a"


def summary_markdown(
    summary: pd.DataFrame, dataset: str, bases: Mapping[str, str] | None = None, reference: str | None = None
) -> str:
    """Mask AP of every method after every phase, then the final phase in detail, each figure the mean over the
    seeds with its sample standard deviation; then each method's paired difference from ``reference``, seed by
    seed. ``bases``: each method's phase-0 model (the ``base`` of report.models), the shared base where absent."""
    segm = summary[summary["iou_type"] == "segm"]
    phases = sorted(segm["phase"].unique())
    methods = [m for m in dict.fromkeys(segm["method"]) if m not in base_models(bases)] or [BASE]
    seeds = sorted(summary["seed"].unique())
    last_phase = summary.groupby("method")["phase"].max()
    lines = [f"# {dataset}: results", "", _seeds_line(seeds), ""]
    lines += ["## Mask AP after each phase (phase 0 is the method's base model)", ""]
    lines += ["| method | " + " | ".join(f"phase {p}" for p in phases) + " |", "|---" * (len(phases) + 1) + "|"]
    for method in methods:
        incremental = 1 in set(segm.loc[segm["method"] == method, "phase"])
        base = (bases or {}).get(method, BASE)

        def cell(phase: int, method: str = method, incremental: bool = incremental, base: str = base) -> str:
            if phase == 0:  # incremental methods start from their base model; joint ones have only their phase
                return _spread_cell(seed_values(summary, base, 0, "AP")) if incremental else "n/a"
            return _spread_cell(seed_values(summary, method, phase, "AP"))

        lines.append(f"| {method} | " + " | ".join(cell(p) for p in phases) + " |")

    last = max(phases)
    sections = (
        (f"After the last phase (phase {last}), mask AP; AP_phase<j>: AP of phase j's classes",
         ["AP", "APr", "APc", "APf", *(f"AP_phase{j}" for j in range(last + 1))]),
        ("After the last phase, mask AP of the classes with this many training instances",
         [name for name, _, _ in INSTANCE_BINS]),
    )  # fmt: skip
    for title, columns in sections:
        lines += ["", f"## {title}", ""]
        lines += ["| method | " + " | ".join(columns) + " | box AP |", "|---" * (len(columns) + 2) + "|"]
        for method in methods:
            final = int(last_phase[method])
            cells = [_spread_cell(seed_values(summary, method, final, c)) for c in columns]
            cells.append(_spread_cell(seed_values(summary, method, final, "AP", "bbox")))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if len(seeds) > 1 and reference in methods:
        lines += paired_section(summary, [m for m in methods if m != reference], reference, last_phase)
    return "\n".join(lines) + "\n"


def _seeds_line(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return (
            f"One seed ({seeds[0]}): one run cannot measure spread, so these figures carry none; config seeds "
            "(e.g. [0, 1, 2]) gives mean ± sample std (n - 1) and paired differences."
        )
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sample standard deviation (n - 1) over them."


def paired_section(
    summary: pd.DataFrame, methods: list[str], reference: str, last_phase: pd.Series, confidence: float = 0.95
) -> list[str]:
    """Each method's per-seed difference from ``reference`` after the last phase: mean and t-interval."""
    columns = ["AP", "APr", "APc", "APf"]
    lines = [
        "",
        f"## Paired differences from {reference}, after the last phase (mask AP, percent points)",
        "",
        f"Per seed, the method's figure minus {reference}'s; the mean difference over the seeds both ran, with "
        f"its {100 * confidence:.0f}% t-interval. An interval that includes 0 cannot tell the two apart on "
        "these seeds.",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for method in methods:
        cells = []
        for metric in columns:
            ours = seed_values(summary, method, int(last_phase[method]), metric)
            theirs = seed_values(summary, reference, int(last_phase[reference]), metric)
            difference = paired_difference(ours, theirs, confidence)
            cells.append(difference.percent() if difference else "n/a")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


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
