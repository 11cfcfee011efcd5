"""Evaluate one phase model on its phase's cumulative val set with LVIS rules (bbox and segm)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lst import tables
from lst.checkpoint import CheckpointError, load_checkpoint
from lst.inference import detect, ground_truth
from lst.io import write_text_atomic
from lst.lvis_eval import FIXED_AP_DETS_PER_CLASS, IOU_TYPES, METRIC_KEYS, evaluate_lvis, mean_ap
from lst.model import build_model, pick_device
from lst.phase_data import load_split, phase_data
from lst.steps import require, step

log = logging.getLogger(__name__)

# AP by training-instance count, the paper's "< 10 instances" claim among them
INSTANCE_BINS = (("AP<10", 0, 10), ("AP10-100", 10, 100), ("AP100-1000", 100, 1000), ("AP>=1000", 1000, float("inf")))


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, split_dir, image_root, model_path, out_dir = (
        Path(p)
        for p in require(cfg, "paths.data_dir", "paths.split_dir", "dataset.image_root", "paths.model", "paths.out_dir")
    )
    phase, eval_cfg = cfg["phase"], cfg["eval"]
    checkpoint = load_checkpoint(model_path, required=("model", "category_ids", "config"))
    data = phase_data(data_dir, split_dir, phase, "val", image_root, with_masks=False)
    if checkpoint["category_ids"] != data.category_ids.tolist():
        raise CheckpointError(f"{model_path}: trained for other classes than phases 0..{phase} of this split")
    model_cfg = dict(checkpoint["config"]["model"])
    threshold = eval_cfg["score_thresh"] if phase == 0 else eval_cfg["score_thresh_incremental"]
    model_cfg.update(box_score_thresh=threshold, box_detections_per_img=eval_cfg["max_dets"])
    model = build_model(model_cfg, num_classes=1 + len(data.category_ids))
    model.load_state_dict(checkpoint["model"])
    model.to(pick_device(cfg["device"]))
    log.info("evaluating %s on %d val images", model_path, len(data.image_ids()))
    detections = detect(
        model, data, eval_cfg["batch_size"], amp=eval_cfg["amp"], channels_last=eval_cfg["channels_last"]
    )
    tables.write_table(detections, out_dir / "detections.parquet", tables.DETECTIONS)

    split = load_split(split_dir)
    seen = split[split["category_id"].isin(data.category_ids)]
    gt = ground_truth(data.images.reset_index(drop=True), data.annotations, seen)
    fixed_ap = bool(eval_cfg.get("fixed_ap", False))
    metrics, per_class = [], []
    for iou_type in IOU_TYPES:
        result = evaluate_lvis(gt, detections, iou_type, eval_cfg["max_dets"], fixed_ap=fixed_ap)
        values = dict(result.metrics)
        for j in range(phase + 1):
            values[f"AP_phase{j}"] = mean_ap(result.per_class, seen.loc[seen["phase"] == j, "category_id"])
        for name, low, high in INSTANCE_BINS:
            in_bin = seen["instance_count"].between(low, high, inclusive="left")
            values[name] = mean_ap(result.per_class, seen.loc[in_bin, "category_id"])
        metrics += [{"iou_type": iou_type, "metric": k, "value": float(v)} for k, v in values.items()]
        classes = seen.merge(result.per_class[["category_id", "num_gt", "ap"]], on="category_id")
        per_class.append(classes.assign(iou_type=iou_type))
        log.info("%s: %s", iou_type, "  ".join(f"{k} {100 * v:.1f}" for k, v in values.items() if v >= 0))
    tables.write_table(pd.DataFrame(metrics), out_dir / "metrics.parquet", tables.METRICS)
    per_class_table = pd.concat(per_class, ignore_index=True)
    per_class_table["num_gt"] = per_class_table["num_gt"].astype(np.int64)
    tables.write_table(per_class_table, out_dir / "per_class.parquet", tables.PER_CLASS)
    if fixed_ap:
        rule = f"Fixed AP (top {FIXED_AP_DETS_PER_CLASS:,} detections per class)"
    else:
        rule = f"at most {eval_cfg['max_dets']} detections per image"
    title = f"{cfg['method']['name']}, phase {phase}: {len(data.image_ids())} val images, {len(seen)} classes, {rule}"
    write_text_atomic(out_dir / "metrics.md", model_markdown(pd.DataFrame(metrics), per_class_table, title))
    log.info("wrote %s", out_dir)


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


if __name__ == "__main__":
    main()
