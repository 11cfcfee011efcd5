"""Evaluate one phase model on its phase's cumulative val set with LVIS rules (bbox and segm)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lst import tables
from lst.checkpoint import CheckpointError, load_checkpoint
from lst.inference import detect, ground_truth
from lst.lvis_eval import IOU_TYPES, evaluate_lvis, mean_ap
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
    detections = detect(model, data, eval_cfg["batch_size"])
    tables.write_table(detections, out_dir / "detections.parquet", tables.DETECTIONS)

    split = load_split(split_dir)
    seen = split[split["category_id"].isin(data.category_ids)]
    gt = ground_truth(data.images.reset_index(drop=True), data.annotations, seen)
    metrics, per_class = [], []
    for iou_type in IOU_TYPES:
        result = evaluate_lvis(gt, detections, iou_type, eval_cfg["max_dets"])
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
    log.info("wrote %s", out_dir)


if __name__ == "__main__":
    main()
