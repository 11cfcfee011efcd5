"""Evaluation every N iterations during training: the AP curve, in Parquet and in TensorBoard.

A training hook (lst.engine.train_loop.HookBase, given to ``engine.train(hooks=[...])``): on the main
process only, every ``period`` iterations, the model in training runs over the phase's val set with
the evaluation settings and the metrics of ``lst.evaluation.phase_metrics`` are appended to the curve. Rows of
an iteration that is run again after a resume replace the earlier ones, so the curve is the same as
without the interruption.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from lst.data import tables
from lst.data.dataset import DetectionData
from lst.data.phase_data import load_phase_plan, phase_data
from lst.engine import distributed
from lst.engine.train_loop import HookBase
from lst.evaluation.inference import detect, ground_truth
from lst.evaluation.phase_metrics import evaluation_options, phase_metrics

log = logging.getLogger(__name__)

# the curve's scalars in TensorBoard and in the log
SHOWN = ("AP", "APr", "APc", "APf")
CURVE = "eval_curve.parquet"  # in a training run's work dir


def read_curve(path: str | Path) -> pd.DataFrame:
    return tables.read_table(path, tables.EVAL_CURVE)


def write_curve(curve: pd.DataFrame, path: str | Path) -> None:
    tables.write_table(curve.sort_values(["iteration", "iou_type", "metric"], kind="stable"), path, tables.EVAL_CURVE)


class PeriodicEvaluation(HookBase):
    """Every ``period`` iterations, metrics of the trainer's model on ``data`` (val), after the update.

    ``hook(iteration, model)`` does the same outside a trainer."""

    def __init__(
        self,
        data: DetectionData,
        seen: pd.DataFrame,
        phase: int,
        period: int,
        eval_cfg: dict[str, Any],
        curve_path: str | Path,
        tensorboard_dir: str | Path | None = None,
    ):
        self.data, self.seen, self.phase, self.period = data, seen, phase, period
        self.eval_cfg = eval_cfg
        self.curve_path = Path(curve_path)
        self.tensorboard_dir = tensorboard_dir
        self._gt: dict[str, Any] | None = None

    def after_step(self) -> None:
        self(self.trainer.iter, self.trainer.model)

    def gt(self) -> dict[str, Any]:
        if self._gt is None:
            annotations = pd.concat([self.data.annotations, self.data.crowd], ignore_index=True)
            self._gt = ground_truth(self.data.images.reset_index(drop=True), annotations, self.seen)
        return self._gt

    def __call__(self, iteration: int, model: nn.Module) -> None:
        if self.period <= 0 or iteration % self.period or not distributed.is_main():
            return
        started = time.perf_counter()
        metrics = self.evaluate(model)
        curve = read_curve(self.curve_path) if self.curve_path.is_file() else metrics.iloc[:0].assign(iteration=0)
        curve = pd.concat([curve[curve["iteration"] < iteration], metrics.assign(iteration=iteration)])
        write_curve(curve, self.curve_path)
        segm = metrics[metrics["iou_type"] == "segm"].set_index("metric")["value"]
        if self.tensorboard_dir is not None:
            with SummaryWriter(str(self.tensorboard_dir)) as writer:
                for row in metrics[metrics["metric"].isin(SHOWN)].itertuples():
                    writer.add_scalar(f"eval/{row.iou_type}/{row.metric}", row.value, iteration)
        shown = "  ".join(f"{m} {100 * segm[m]:.1f}" for m in SHOWN if segm.get(m, -1) >= 0)
        log.info("eval at iteration %d (mask): %s  [%.0f s]", iteration, shown, time.perf_counter() - started)

    def evaluate(self, model: nn.Module) -> pd.DataFrame:
        """Metrics of ``model`` with the evaluation's score threshold and detection cap; its mode and
        inference settings are restored afterwards."""
        heads = model.roi_heads
        saved = heads.score_thresh, heads.detections_per_img
        modes = {module: module.training for module in model.modules()}  # training keeps some in eval mode
        threshold = self.eval_cfg["score_thresh"] if self.phase == 0 else self.eval_cfg["score_thresh_incremental"]
        heads.score_thresh, heads.detections_per_img = threshold, self.eval_cfg["max_dets"]
        try:
            detections = detect(model, self.data, self.eval_cfg["batch_size"], log_period=10**9,
                                amp=self.eval_cfg["amp"])  # fmt: skip
        finally:
            heads.score_thresh, heads.detections_per_img = saved
            for module, training in modes.items():
                module.training = training
        metrics, _ = phase_metrics(self.gt(), detections, self.seen, self.phase, **evaluation_options(self.eval_cfg))
        return metrics


def training_hooks(cfg: dict[str, Any], period: int, work_dir: str | Path) -> list[PeriodicEvaluation]:
    """The periodic evaluation of a training step (none when ``period`` is 0), on its phase's val set;
    the curve is kept in ``work_dir`` so that it survives a resume."""
    if period <= 0:
        return []
    paths, phase = cfg["paths"], cfg["phase"]
    data = phase_data(paths["data_dir"], paths["split_dir"], phase, "val", cfg["dataset"]["image_root"], False)
    plan = load_phase_plan(paths["split_dir"])
    seen = plan[plan["category_id"].isin(data.category_ids)]
    log.info("evaluating every %d iterations on %d val images", period, len(data.image_ids()))
    work_dir = Path(work_dir)
    return [PeriodicEvaluation(data, seen, phase, period, cfg["eval"], work_dir / CURVE, work_dir / "tensorboard")]


def publish_curve(work_dir: str | Path, path: str | Path) -> None:
    """Copy the curve kept in ``work_dir`` to the step's output ``path`` (an empty table if none was run)."""
    kept = Path(work_dir) / CURVE
    curve = read_curve(kept) if kept.is_file() else pd.DataFrame(columns=tables.EVAL_CURVE.names)
    write_curve(curve, path)
