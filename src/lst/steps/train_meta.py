"""Train the meta-module (few-shot weight generator) episodically on the base model's classes."""

from __future__ import annotations

import logging
from typing import Any

import torch

from lst.data.phase_data import phase_data
from lst.engine.distributed import pick_device
from lst.methods.meta_module import WeightGenerator, class_features, train_generator
from lst.modeling.checkpoint import load_checkpoint, save_checkpoint
from lst.modeling.mask_rcnn import build_model
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, split_dir, image_root, base_path, out = require(
        cfg, "paths.data_dir", "paths.split_dir", "dataset.image_root", "paths.previous", "paths.model"
    )
    meta_cfg, seed = cfg["meta"], cfg["seed"]
    base = load_checkpoint(base_path, required=("model", "category_ids", "config"))
    model = build_model(base["config"]["model"], 1 + len(base["category_ids"]))
    model.load_state_dict(base["model"])
    model.to(pick_device(cfg["device"]))
    data = phase_data(data_dir, split_dir, 0, "train", image_root, with_masks=False)
    features = class_features(model, data, base["category_ids"], meta_cfg["per_class"], cfg["eval"]["batch_size"], seed)
    rows = model.roi_heads.box_predictor.cls_score.weight.detach().cpu()
    weights = {c: rows[i + 1] for i, c in enumerate(base["category_ids"])}
    log.info("meta-module: features of %d base classes (up to %d each)", len(features), meta_cfg["per_class"])
    torch.manual_seed(seed)
    generator = WeightGenerator(rows.shape[1], meta_cfg["scale"])
    losses = train_generator(
        generator,
        features,
        weights,
        episodes=meta_cfg["episodes"],
        novel_per_episode=meta_cfg["novel_per_episode"],
        shots=meta_cfg["shots"],
        queries=meta_cfg["queries"],
        lr=meta_cfg["lr"],
        seed=seed,
    )
    save_checkpoint(
        {"model": generator.state_dict(), "category_ids": base["category_ids"], "config": {"meta": meta_cfg},
         "losses": losses},
        out,
    )  # fmt: skip
    log.info("wrote %s (first/last episode loss %.3f / %.3f)", out, losses[0], losses[-1])


if __name__ == "__main__":
    main()
