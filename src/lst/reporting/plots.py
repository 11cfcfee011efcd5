"""Plots for people: forgetting across phases, and per-class AP against training instances."""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lst.conf import methods  # noqa: E402
from lst.io import atomic_path  # noqa: E402
from lst.reporting.report import BASE, base_models  # noqa: E402


def _save(figure: plt.Figure, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def _colour(method: str) -> str:
    """The same colour for a method in every plot: by its place among the method files (lst.conf.methods)."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = list(methods())
    index = order.index(method) if method in order else len(order) + sum(map(ord, method))
    return palette[index % len(palette)]


def forgetting_plot(summary: pd.DataFrame, path: str | os.PathLike, bases: Mapping[str, str] | None = None) -> None:
    """One panel per phase j: mask AP of phase j's classes after each later phase, a line per method, from its
    base model (``bases[method]``, else the shared base)."""
    segm = summary[summary["iou_type"] == "segm"]
    last = int(segm["phase"].max())
    figure, axes = plt.subplots(1, last + 1, figsize=(3.2 * (last + 1), 3), sharey=True, squeeze=False)
    for j, axis in enumerate(axes[0]):
        metric = f"AP_phase{j}"
        for method in sorted(set(segm["method"]) - base_models(bases)):
            rows = segm[(segm["method"] == method) & (segm["metric"] == metric)].set_index("phase")["value"]
            base = segm[segm["method"] == (bases or {}).get(method, BASE)].set_index("metric")["value"]
            if j == 0 and 1 in rows.index and metric in base:
                rows = pd.concat([pd.Series({0: base[metric]}), rows])
            rows = rows[rows >= 0].sort_index()
            if not rows.empty:
                axis.plot(rows.index, 100 * rows.to_numpy(), marker="o", label=method, color=_colour(method))
        axis.set_title(f"classes of phase {j}")
        axis.set_xlabel("after phase")
        axis.set_xticks(range(j, last + 1))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("mask AP (%)")
    axes[0][-1].legend(fontsize="small")
    _save(figure, path)


def per_class_plot(per_class: dict[str, pd.DataFrame], path: str | os.PathLike) -> None:
    """Per-class mask AP against training instance count (log x), one series per method."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for method, table in sorted(per_class.items()):
        rows = table[(table["iou_type"] == "segm") & table["ap"].notna()]
        axis.scatter(rows["instance_count"], 100 * rows["ap"], label=method, s=14, alpha=0.7, color=_colour(method))
    axis.set_xscale("log")
    axis.set_xlabel("training instances of the class")
    axis.set_ylabel("mask AP (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    _save(figure, path)


def eval_curve_plot(curves: dict[tuple[str, int], pd.DataFrame], path: str | os.PathLike) -> None:
    """Mask AP during training (periodic evaluation), a line per (method, phase) model; a note when none ran."""
    figure, axis = plt.subplots(figsize=(6, 4))
    styles = ["-", "--", ":", "-."]
    for (method, phase), curve in sorted(curves.items()):
        rows = curve[(curve["iou_type"] == "segm") & (curve["metric"] == "AP")].sort_values("iteration")
        if not rows.empty:
            axis.plot(rows["iteration"], 100 * rows["value"], marker=".", linestyle=styles[phase % len(styles)],
                      label=f"{method} phase {phase}", color=_colour(method))  # fmt: skip
    if axis.lines:
        axis.legend(fontsize="small")
    else:
        axis.text(0.5, 0.5, "no periodic evaluation (eval_period = 0)", ha="center", va="center",
                  transform=axis.transAxes)  # fmt: skip
    axis.set_xlabel("iteration")
    axis.set_ylabel("mask AP (%)")
    axis.grid(alpha=0.3)
    _save(figure, path)
