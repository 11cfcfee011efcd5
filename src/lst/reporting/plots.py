"""Plots for people: forgetting across phases, per-class AP against training instances, AP during training.
Over several seeds each draws the mean, with a band (or bars) of one sample standard deviation."""

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


def _mean_std(values: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (0 for one seed) of ``values['value']`` per ``by``."""
    grouped = values.groupby(by)["value"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0)})


def _line(axis: plt.Axes, x, stats: pd.DataFrame, band: bool, **style) -> None:
    """A mean line in percent, with a band of one standard deviation when the seeds give one."""
    axis.plot(x, 100 * stats["mean"].to_numpy(), **style)
    if band:
        low, high = (100 * (stats["mean"] + sign * stats["std"]).to_numpy() for sign in (-1, 1))
        axis.fill_between(x, low, high, color=style.get("color"), alpha=0.2, linewidth=0)


def forgetting_plot(summary: pd.DataFrame, path: str | os.PathLike, bases: Mapping[str, str] | None = None) -> None:
    """One panel per phase j: mask AP of phase j's classes after each later phase, a line per method, from its
    base model (``bases[method]``, else the shared base); the mean over the seeds with a band of one std."""
    segm = summary[(summary["iou_type"] == "segm") & (summary["value"] >= 0)]
    band = segm["seed"].nunique() > 1
    last = int(summary["phase"].max())
    figure, axes = plt.subplots(1, last + 1, figsize=(3.2 * (last + 1), 3), sharey=True, squeeze=False)
    for j, axis in enumerate(axes[0]):
        metric = segm[segm["metric"] == f"AP_phase{j}"]
        for method in sorted(set(summary["method"]) - base_models(bases)):
            rows = metric[metric["method"] == method]
            if j == 0 and 1 in set(rows["phase"]):  # an incremental method: from its base model
                rows = pd.concat([metric[metric["method"] == (bases or {}).get(method, BASE)], rows])
            if not rows.empty:
                stats = _mean_std(rows, "phase").sort_index()
                _line(axis, stats.index, stats, band, marker="o", label=method, color=_colour(method))
        axis.set_title(f"classes of phase {j}")
        axis.set_xlabel("after phase")
        axis.set_xticks(range(j, last + 1))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("mask AP (%)" + (" (mean ± std over seeds)" if band else ""))
    axes[0][-1].legend(fontsize="small")
    _save(figure, path)


def per_class_plot(per_class: dict[str, pd.DataFrame], path: str | os.PathLike) -> None:
    """Per-class mask AP against training instance count (log x), one series per method; over several seeds
    (a ``seed`` column) the mean AP per class, with bars of one std."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for method, table in sorted(per_class.items()):
        rows = table[(table["iou_type"] == "segm") & table["ap"].notna()].rename(columns={"ap": "value"})
        stats = _mean_std(rows, ["category_id", "instance_count"]).reset_index()
        errors = 100 * stats["std"] if "seed" in rows and rows["seed"].nunique() > 1 else None
        axis.errorbar(stats["instance_count"], 100 * stats["mean"], yerr=errors, fmt="o", markersize=3.5,
                      alpha=0.7, label=method, color=_colour(method), elinewidth=0.8)  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("training instances of the class")
    axis.set_ylabel("mask AP (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    _save(figure, path)


def eval_curve_plot(curves: dict[tuple[int, str, int], pd.DataFrame], path: str | os.PathLike) -> None:
    """Mask AP during training (periodic evaluation), a line per (method, phase) model, the mean over the seeds
    of ``curves[seed, method, phase]`` with a band of one std; a note when none ran."""
    figure, axis = plt.subplots(figsize=(6, 4))
    styles = ["-", "--", ":", "-."]
    models: dict[tuple[str, int], list[pd.DataFrame]] = {}
    for (_, method, phase), curve in curves.items():
        models.setdefault((method, phase), []).append(curve[(curve["iou_type"] == "segm") & (curve["metric"] == "AP")])
    for (method, phase), frames in sorted(models.items()):
        rows = pd.concat(frames)
        if not rows.empty:
            stats = _mean_std(rows, "iteration").sort_index()
            _line(axis, stats.index, stats, len(frames) > 1, marker=".", linestyle=styles[phase % len(styles)],
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
