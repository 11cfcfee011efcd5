"""Evaluate one phase model on its phase's cumulative val set with LVIS rules (bbox and segm)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from lst.data import tables
from lst.data.phase_data import load_phase_plan, phase_data, phase_images
from lst.engine.distributed import pick_device
from lst.errors import CheckpointError
from lst.evaluation.inference import detect, ground_truth
from lst.evaluation.lvis_eval import FIXED_AP_DETS_PER_CLASS
from lst.evaluation.phase_metrics import evaluation_options, phase_metrics
from lst.io import write_text_atomic
from lst.methods import ClassInfo
from lst.modeling.checkpoint import load_checkpoint
from lst.modeling.mask_rcnn import build_model
from lst.modeling.roi_heads import set_classification
from lst.reporting.gallery import draw_gallery, gallery_settings, threshold_text
from lst.reporting.report import model_markdown
from lst.steps import check_loss_layout, method_of, require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, split_dir, model_path, out_dir = (
        Path(p) for p in require(cfg, "paths.data_dir", "paths.split_dir", "paths.model", "paths.out_dir")
    )
    (image_root,) = require(cfg, "dataset.image_root")  # one folder, or {train: DIR, val: DIR}
    phase, eval_cfg = cfg["phase"], cfg["eval"]
    options = evaluation_options(eval_cfg)  # bad settings fail before anything is computed or written
    gallery_settings(cfg["report"]["gallery"])
    checkpoint = load_checkpoint(model_path, required=("model", "category_ids", "config"))
    data = phase_data(data_dir, split_dir, phase, "val", image_root, with_masks=False)
    if checkpoint["category_ids"] != data.category_ids.tolist():
        raise CheckpointError(f"{model_path}: trained for other classes than phases 0..{phase} of this plan")
    (gallery,) = require(cfg, "paths.gallery")
    model_cfg = dict(checkpoint["config"]["model"])
    threshold = eval_cfg["score_thresh"] if phase == 0 else eval_cfg["score_thresh_incremental"]
    model_cfg.update(box_score_thresh=threshold, box_detections_per_img=eval_cfg["max_dets"])
    model = build_model(model_cfg, num_classes=1 + len(data.category_ids))
    model.load_state_dict(checkpoint["model"])
    plan = load_phase_plan(split_dir)
    # the method's test-time scores (softmax by default), as its classification loss trained them
    train_images = len(phase_images(data_dir, split_dir, phase, "train"))
    num_old = 0 if phase == 0 else int((plan["phase"] < phase).sum())
    classes = ClassInfo.of(plan, data.category_ids, train_images, num_old, phase, seed=0)  # scores draw nothing
    method = method_of(cfg)
    check_loss_layout(method, model_cfg, model_path)
    set_classification(model.roi_heads, method.classification_loss(classes))
    model.to(pick_device(cfg["device"]))
    log.info("evaluating %s on %d val images", model_path, len(data.image_ids()))
    detections = detect(
        model, data, eval_cfg["batch_size"], amp=eval_cfg["amp"], channels_last=eval_cfg["channels_last"]
    )
    tables.write_table(detections, out_dir / "detections.parquet", tables.DETECTIONS)

    seen = plan[plan["category_id"].isin(data.category_ids)]
    annotations = pd.concat([data.annotations, data.crowd], ignore_index=True)  # crowd regions: ignored matches
    gt = ground_truth(data.images.reset_index(drop=True), annotations, seen)
    fixed_ap = bool(eval_cfg.get("fixed_ap", False))
    metrics, per_class_table = phase_metrics(gt, detections, seen, phase, **options)
    for iou_type, values in metrics.groupby("iou_type", sort=False):
        log.info(
            "%s: %s",
            iou_type,
            "  ".join(f"{r.metric} {100 * r.value:.1f}" for r in values.itertuples() if r.value >= 0),
        )
    tables.write_table(metrics, out_dir / "metrics.parquet", tables.METRICS)
    tables.write_table(per_class_table, out_dir / "per_class.parquet", tables.PER_CLASS)
    if fixed_ap:
        rule = f"Fixed AP (top {FIXED_AP_DETS_PER_CLASS:,} detections per class)"
    else:
        rule = f"at most {eval_cfg['max_dets']} detections per image"
    title = f"{cfg['method']['name']}, phase {phase}: {len(data.image_ids())} val images, {len(seen)} classes, {rule}"
    write_text_atomic(out_dir / "metrics.md", model_markdown(metrics, per_class_table, title))
    name = f"{cfg['method']['name']} phase {phase}"
    (threshold,) = draw_gallery(data, plan, {name: detections}, cfg["report"]["gallery"], gallery).values()
    log.info("wrote %s and %s (drawn: %s)", out_dir, gallery, threshold_text(threshold))


if __name__ == "__main__":
    main()
