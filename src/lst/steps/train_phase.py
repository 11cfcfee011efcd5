"""Train incremental phase k from phase k-1's model: grow the classifier, train on the phase's stream.

Run alone, or under ``torchrun --nproc_per_node=N`` for N DDP processes: the replay stream must have been
built for N processes (``replay.world_size``); rank r trains on the samples of rank r (lst.engine.trainer).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lst.data import tables
from lst.data.dataset import SampleStream
from lst.data.phase_data import phase_data
from lst.data.sampling import phase_seed
from lst.engine import distributed
from lst.engine.trainer import rank_samples, train
from lst.errors import CheckpointError, DataError
from lst.evaluation.periodic_eval import publish_curve, training_hooks
from lst.io import file_digest
from lst.methods.distill import DistillationLoss
from lst.methods.meta_module import WeightGenerator, class_features
from lst.modeling.checkpoint import load_checkpoint, save_checkpoint
from lst.modeling.mask_rcnn import build_model, grow_classifier
from lst.steps import require, step, training_dir

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    with distributed.launch(cfg["device"]) as context:
        run(cfg, context)


def run(cfg: dict[str, Any], context: distributed.Context) -> None:
    data_dir, split_dir, image_root, previous_path, replay_path, model_path = require(
        cfg, "paths.data_dir", "paths.split_dir", "dataset.image_root", "paths.previous", "paths.replay", "paths.model"
    )
    work_dir = training_dir(cfg)
    phase, train_cfg, seed = cfg["phase"], cfg["train_phase"], phase_seed(cfg["seed"], cfg["phase"])
    data = phase_data(data_dir, split_dir, phase, "train", image_root)
    previous = load_checkpoint(previous_path, required=("model", "category_ids", "config"))
    old_ids = list(previous["category_ids"])
    if old_ids != data.category_ids[: len(old_ids)].tolist():
        raise CheckpointError(f"{previous_path}: trained for other classes than phases 0..{phase - 1} of this plan")
    # the architecture is the previous model's; its training-time sampling may differ per phase
    model_cfg = {**previous["config"]["model"], **train_cfg["model_overrides"]}
    torch.manual_seed(seed)
    model = build_model(model_cfg, num_classes=1 + len(data.category_ids))
    generator = torch.Generator().manual_seed(seed)
    model.load_state_dict(grow_classifier(previous["model"], 1 + len(data.category_ids), generator))
    if cfg["method"]["meta"]:
        (meta_path,) = require(cfg, "paths.meta")
        initialise_new_rows(model, data, len(old_ids), meta_path, cfg)
    replay = tables.read_table(replay_path, tables.REPLAY)
    stream = rank_samples(replay, context.rank, context.world_size)
    log.info(
        "phase %d (%s): %d old + %d new classes, %d samples",
        phase, cfg["method"]["name"], len(old_ids), len(data.category_ids) - len(old_ids), len(stream),
    )  # fmt: skip
    extra_losses = None
    if cfg["method"]["distill"]:
        (logits_path,) = require(cfg, "paths.teacher_logits")
        logits = tables.read_arrow(logits_path, tables.logits_schema(len(old_ids) + 1))
        extra_losses = DistillationLoss(logits, cfg["distill"]["weight"], cfg["distill"]["group_images"])
        log.info("distilling from %s (%d boxes x flips)", logits_path, logits.num_rows)
    checkpoint = train(
        model,
        SampleStream(data, stream),
        train_cfg,
        work_dir,
        checkpoint_fields={
            "category_ids": data.category_ids.tolist(),
            "config": {
                "model": model_cfg,
                "train": train_cfg,
                "method": cfg["method"]["name"],
                "phase": phase,
            },
            "meta": previous.get("meta", {}),
            "fingerprint": file_digest(
                previous_path, replay_path, cfg["paths"]["teacher_logits"], cfg["paths"]["meta"]
            ),
        },
        seed=seed,
        hooks=training_hooks(cfg, train_cfg["eval_period"], work_dir),
        extra_losses=extra_losses,
        device=context.device,
    )
    if context.is_main:
        if cfg["paths"]["eval_curve"]:
            publish_curve(work_dir, cfg["paths"]["eval_curve"])
        save_checkpoint(checkpoint, model_path)
        log.info("wrote %s", model_path)


def initialise_new_rows(model, data, num_old: int, meta_path: str, cfg: dict[str, Any]) -> None:
    """Replace the new classes' random classifier rows by the meta-module's generated weights."""
    generator_checkpoint = load_checkpoint(meta_path, required=("model",))
    rows = model.roi_heads.box_predictor.cls_score.weight
    generator = WeightGenerator(rows.shape[1])
    generator.load_state_dict(generator_checkpoint["model"])
    new_ids = data.category_ids[num_old:].tolist()
    features = class_features(model, data, new_ids, cfg["meta"]["per_class"], cfg["eval"]["batch_size"], cfg["seed"])
    missing = [c for c in new_ids if c not in features]
    if missing:
        raise DataError(f"meta-module: no training boxes for new classes {missing[:5]}")
    with torch.no_grad():
        generated = generator([features[c] for c in new_ids], rows[1 : 1 + num_old])
        rows[1 + num_old :] = generated
    log.info("meta-module %s generated the rows of %d new classes", meta_path, len(new_ids))


if __name__ == "__main__":
    main()
