"""Train from initial weights: the base phase (phase 0), or a joint baseline on every class at once.

``phase`` says which classes: 0 for the base model (method file ``base``), the last phase for a joint method
(all classes, the non-incremental baseline). The method (lst.methods) draws the image stream and sets the
classification loss.

Initial weights: a trimmed COCO Mask R-CNN checkpoint (``paths.init``) initialises everything but the
class-specific layers; else ``model.backbone_weights`` (an ImageNet state dict, lst.modeling.backbones) initialises
the backbone body alone; else the model trains from scratch. With both, the COCO checkpoint wins (its
backbone is ImageNet-initialised and COCO-trained already) and the checkpoint records
``backbone_weights: null``. The file's path stays in the model config (it sets the body's norm layer),
its sha256 in the checkpoint's provenance (``meta``) and in the resume fingerprint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lst.data.dataset import SampleStream
from lst.data.phase_data import load_phase_plan, phase_data
from lst.data.sampling import aspect_groups, per_process_batch
from lst.engine import distributed
from lst.engine.budget import base_schedule
from lst.engine.trainer import rank_samples, train
from lst.evaluation.periodic_eval import publish_curve, training_hooks
from lst.io import file_digest
from lst.methods import ClassInfo, StreamRequest
from lst.modeling.backbones import load_backbone_weights
from lst.modeling.checkpoint import load_checkpoint, save_checkpoint
from lst.modeling.mask_rcnn import build_model
from lst.modeling.roi_heads import set_classification
from lst.steps import method_of, require, step, training_dir

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    with distributed.launch(cfg["device"]) as context:
        run(cfg, context)


def run(cfg: dict[str, Any], context: distributed.Context) -> None:
    data_dir, split_dir, image_root, model_path = require(
        cfg, "paths.data_dir", "paths.split_dir", "dataset.image_root", "paths.model"
    )
    work_dir = training_dir(cfg)
    train_cfg, model_cfg, seed, phase = cfg["train_base"], dict(cfg["model"]), cfg["seed"], cfg["phase"]
    method = method_of(cfg)
    model_cfg["extra_logits"] = method.extra_logits()  # the loss's layout, kept with the model
    train_cfg = training_config(cfg, split_dir)  # a joint model's budget derived
    local_batch = per_process_batch(train_cfg["batch_size"], context.world_size, "train_base.batch_size")
    data = phase_data(data_dir, split_dir, phase, "train", image_root)
    provenance: dict[str, Any] = {}
    init = None
    if cfg["paths"]["init"]:
        init = load_checkpoint(cfg["paths"]["init"])
        provenance = dict(init.get("meta", {}))
        # converted weights dictate their input normalisation and stride placement
        model_cfg.update({k: provenance[k] for k in ("image_mean", "image_std", "stride_in_1x1") if k in provenance})
    backbone_file = model_cfg.get("backbone_weights")
    if init is not None and backbone_file:
        # the COCO checkpoint's backbone was itself trained from ImageNet weights, then on COCO
        log.warning("%s is not loaded: the COCO checkpoint's backbone takes precedence", backbone_file)
        model_cfg["backbone_weights"] = backbone_file = None
    torch.manual_seed(seed)
    model = build_model(model_cfg, num_classes=1 + len(data.category_ids))
    if init is not None:
        from lst.modeling.weights import load_trimmed_into

        load_trimmed_into(model, init["model"])
        log.info("initialised from %s", cfg["paths"]["init"])
    elif backbone_file:
        digest = load_backbone_weights(model.backbone.body, model_cfg["backbone"], backbone_file)
        provenance["backbone_weights"] = {"path": str(backbone_file), "sha256": digest}
        log.info("backbone body initialised from %s (sha256 %s); the heads train from scratch", backbone_file, digest)
    else:
        log.info("no COCO checkpoint or backbone weights configured: the model trains from scratch")
    # the stream of every process (batch_size images per iteration over all of them), of which this rank takes
    # its share
    groups = aspect_groups(data.images) if train_cfg["aspect_grouping"] else None
    request = StreamRequest(
        load_phase_plan(split_dir), data.annotations, data.image_ids(), phase, train_cfg["iterations"],
        local_batch, context.world_size, seed, train_cfg["flip_prob"], groups,
    )  # fmt: skip
    stream = rank_samples(method.stream(request), context.rank, context.world_size)
    log.info(
        "%s (phases 0..%d): %d classes, %d training images",
        method.name, phase, len(data.category_ids), len(data.image_ids()),
    )  # fmt: skip
    classes = ClassInfo.of(request.plan, data.category_ids, len(data.image_ids()), 0, phase, seed)
    classification = method.classification_loss(classes).to(context.device)
    set_classification(model.roi_heads, classification)
    checkpoint = train(
        model,
        SampleStream(data, stream),
        train_cfg,
        work_dir,
        checkpoint_fields={
            "category_ids": data.category_ids.tolist(),
            "config": {"model": model_cfg, "train": train_cfg, "method": method.name, "phase": phase, "seed": seed},
            "meta": provenance,
            "fingerprint": file_digest(cfg["paths"]["init"], backbone_file),
        },
        seed=seed,
        hooks=training_hooks(cfg, train_cfg["eval_period"], work_dir),
        device=context.device,
        method_state={"classification": classification},
    )
    if context.is_main:
        if cfg["paths"]["eval_curve"]:
            publish_curve(work_dir, cfg["paths"]["eval_curve"])
        save_checkpoint(checkpoint, model_path)
        log.info("wrote %s", Path(model_path))


def training_config(cfg: dict[str, Any], split_dir: str) -> dict[str, Any]:
    """train_base, with a joint model's (phase > 0) budget derived per ``train_base.joint_budget``."""
    num_incremental = int(load_phase_plan(split_dir)["phase"].max()) if cfg["phase"] else 0
    train_cfg = base_schedule(cfg, num_incremental)
    if train_cfg is not cfg["train_base"]:
        log.info(
            "joint budget (equal_images): the images of the base phase and %d incremental phases, %d iterations "
            "of %d images, lr steps %s",
            num_incremental, train_cfg["iterations"], train_cfg["batch_size"], train_cfg["steps"],
        )  # fmt: skip
    return train_cfg


if __name__ == "__main__":
    main()
