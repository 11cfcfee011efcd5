"""Gather every model's metrics into one summary table (Parquet and Markdown)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from lst.data import tables
from lst.errors import ConfigError
from lst.evaluation.periodic_eval import read_curve
from lst.io import write_text_atomic
from lst.reporting.plots import eval_curve_plot, forgetting_plot, per_class_plot
from lst.reporting.report import summarize, summary_markdown
from lst.reporting.summary_page import summary_html
from lst.steps import require, step

log = logging.getLogger(__name__)

OUTPUTS = ("summary_table", "summary", "summary_html", "forgetting_plot", "per_class_plot", "eval_curve_plot")


@step
def main(cfg: dict[str, Any]) -> None:
    """Every model of ``report.models``, with its files at the same place in ``paths.metrics``,
    ``paths.per_class`` and ``paths.curves``."""
    outputs = dict(zip(OUTPUTS, require(cfg, *(f"paths.{name}" for name in OUTPUTS)), strict=True))
    models, paths = cfg["report"]["models"], cfg["paths"]
    for name in ("metrics", "per_class", "curves"):
        if len(paths[name]) != len(models):
            raise ConfigError(f"paths.{name}: {len(paths[name])} files for the {len(models)} report.models")
    keys = [(int(model["seed"]), model["method"], int(model["phase"])) for model in models]
    metrics = [tables.read_table(path, tables.METRICS) for path in paths["metrics"]]
    summary = summarize([(*key, table) for key, table in zip(keys, metrics, strict=True)])
    final = summary.groupby("method")["phase"].max()
    per_class: dict[str, list] = {}  # each method's last model, one table per seed
    for (seed, method, phase), path in zip(keys, paths["per_class"], strict=True):
        if phase == final[method]:
            per_class.setdefault(method, []).append(tables.read_table(path, tables.PER_CLASS).assign(seed=seed))
    curves = {key: read_curve(path) for key, path in zip(keys, paths["curves"], strict=True)}
    bases = {model["method"]: model["base"] for model in models}
    forgetting_plot(summary, outputs["forgetting_plot"], bases)
    per_class_plot({method: pd.concat(frames) for method, frames in per_class.items()}, outputs["per_class_plot"])
    eval_curve_plot(curves, outputs["eval_curve_plot"])
    tables.write_table(summary, outputs["summary_table"], tables.SUMMARY)
    markdown = summary_markdown(summary, cfg["dataset"]["name"], bases, cfg["report"]["reference"])
    write_text_atomic(Path(outputs["summary"]), markdown)
    write_text_atomic(Path(outputs["summary_html"]), summary_html(markdown, outputs["forgetting_plot"]))
    log.info("summary:\n%s", markdown)
    log.info("wrote %s and %s", outputs["summary_table"], outputs["summary"])


if __name__ == "__main__":
    main()
