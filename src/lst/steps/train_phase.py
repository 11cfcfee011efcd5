"""Train incremental phase k from phase k-1's model: grow the classifier, train on the phase's stream.

The method (lst.methods) sets the new rows, the classification loss and the teacher terms; the stream is its
own, made by build_replay. Run alone, or under ``torchrun --nproc_per_node=N`` for N DDP processes: the stream
must have been built for N processes (``replay.world_size``); rank r trains on the samples of rank r
(lst.engine.trainer).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lst.data import tables
from lst.data.dataset import SampleStream
from lst.data.phase_data import load_phase_plan, phase_data
from lst.data.sampling import per_process_batch, phase_seed
from lst.engine import distributed
from lst.engine.trainer import rank_samples, train
from lst.errors import CheckpointError
from lst.evaluation.periodic_eval import publish_curve, training_hooks
from lst.io import file_digest
from lst.methods import ClassInfo, PhaseTraining
from lst.modeling.checkpoint import load_checkpoint, save_checkpoint
from lst.modeling.mask_rcnn import build_model, grow_classifier
from lst.modeling.roi_heads import set_classification
from lst.steps import check_loss_layout, method_of, require, step, training_dir

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    with distributed.launch(cfg["device"]) as context:
        run(cfg, context)


def run(cfg: dict[str, Any], context: distributed.Context) -> None:
    data_dir, split_dir, image_root, previous_path, replay_path, model_path = require(
        cfg, "paths.data_dir", "paths.split_dir", "dataset.image_root", "paths.previous", "paths.replay", "paths.model"
    )
    method = method_of(cfg)
    names = method.phase_inputs()
    inputs = dict(zip(names, require(cfg, *(f"paths.{name}" for name in names)), strict=True))
    work_dir = training_dir(cfg)
    phase, train_cfg, seed = cfg["phase"], cfg["train_phase"], phase_seed(cfg["seed"], cfg["phase"])
    per_process_batch(train_cfg["batch_size"], context.world_size, "train_phase.batch_size")  # refused early
    data = phase_data(data_dir, split_dir, phase, "train", image_root)
    previous = load_checkpoint(previous_path, required=("model", "category_ids", "config"))
    old_ids = list(previous["category_ids"])
    if old_ids != data.category_ids[: len(old_ids)].tolist():
        raise CheckpointError(f"{previous_path}: trained for other classes than phases 0..{phase - 1} of this plan")
    # the architecture is the previous model's; its training-time sampling may differ per phase
    model_cfg = {**previous["config"]["model"], **train_cfg["model_overrides"]}
    check_loss_layout(method, model_cfg, previous_path)
    torch.manual_seed(seed)
    model = build_model(model_cfg, num_classes=1 + len(data.category_ids))
    generator = torch.Generator().manual_seed(seed)
    model.load_state_dict(grow_classifier(previous["model"], 1 + len(data.category_ids), generator))
    setup = PhaseTraining(model, previous, data, len(old_ids), inputs, context.device, phase, cfg["seed"])
    method.initialise_new_rows(setup)
    replay = tables.read_table(replay_path, tables.REPLAY)
    stream = rank_samples(replay, context.rank, context.world_size)
    log.info(
        "phase %d (%s): %d old + %d new classes, %d samples",
        phase, method.name, len(old_ids), len(data.category_ids) - len(old_ids), len(stream),
    )  # fmt: skip
    classes = ClassInfo.of(
        load_phase_plan(split_dir), data.category_ids, len(data.image_ids()), len(old_ids), phase, cfg["seed"]
    )
    classification = method.classification_loss(classes).to(context.device)
    set_classification(model.roi_heads, classification)
    terms = method.teacher_terms(setup)
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
                "method": method.name,
                "phase": phase,
                "seed": cfg["seed"],
            },
            "meta": previous.get("meta", {}),
            "fingerprint": file_digest(previous_path, replay_path, *inputs.values()),
        },
        seed=seed,
        hooks=training_hooks(cfg, train_cfg["eval_period"], work_dir),
        extra_losses=terms,
        device=context.device,
        method_state={"classification": classification, "teacher_terms": terms},
    )
    if context.is_main:
        if cfg["paths"]["eval_curve"]:
            publish_curve(work_dir, cfg["paths"]["eval_curve"])
        save_checkpoint(checkpoint, model_path)
        log.info("wrote %s", model_path)


if __name__ == "__main__":
    main()
