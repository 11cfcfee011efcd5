"""Gather every model's metrics into one summary table (Parquet and Markdown)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from lst import tables
from lst.errors import ConfigError
from lst.io import write_text_atomic
from lst.periodic_eval import read_curve
from lst.plots import eval_curve_plot, forgetting_plot, per_class_plot
from lst.report import summarize, summary_markdown
from lst.steps import require, step

log = logging.getLogger(__name__)

# results/<dataset>/<method>/phase<k>/eval/metrics.parquet
_METRICS_PATH = re.compile(r"(?P<method>[^/]+)/phase(?P<phase>\d+)/eval/metrics\.parquet$")


@step
def main(cfg: dict[str, Any]) -> None:
    (out_dir,) = require(cfg, "paths.out_dir")
    if len(cfg["paths"]["curves"]) != len(cfg["paths"]["metrics"]):
        raise ConfigError("paths.curves: one eval_curve.parquet per metrics.parquet, in the same order")
    entries = []
    for path in cfg["paths"]["metrics"]:
        match = _METRICS_PATH.search(Path(path).as_posix())
        if match is None:
            raise ConfigError(f"{path}: not a <method>/phase<k>/eval/metrics.parquet path")
        metrics = tables.read_table(path, tables.METRICS)
        entries.append((match["method"], int(match["phase"]), metrics))
    summary = summarize(entries)
    out_dir = Path(out_dir)
    final = summary.groupby("method")["phase"].max()
    per_class = {
        method: tables.read_table(Path(path).with_name("per_class.parquet"), tables.PER_CLASS)
        for path, (method, phase, _) in zip(cfg["paths"]["metrics"], entries, strict=True)
        if phase == final[method]
    }
    curves = {
        (method, phase): read_curve(path)
        for path, (method, phase, _) in zip(cfg["paths"]["curves"], entries, strict=True)
    }
    forgetting_plot(summary, out_dir / "plots" / "forgetting.png")
    per_class_plot(per_class, out_dir / "plots" / "per_class_ap.png")
    eval_curve_plot(curves, out_dir / "plots" / "eval_curve.png")
    tables.write_table(summary, out_dir / "summary.parquet", tables.SUMMARY)
    markdown = summary_markdown(summary, cfg["dataset"]["name"])
    write_text_atomic(out_dir / "summary.md", markdown)
    log.info("summary:\n%s", markdown)
    log.info("wrote %s and %s", out_dir / "summary.parquet", out_dir / "summary.md")


if __name__ == "__main__":
    main()
