"""Extract distillation targets: phase k-1's cosine scores on phase k's new-class boxes, with and without flip."""

from __future__ import annotations

import logging
from typing import Any

from lst.data import tables
from lst.data.phase_data import load_phase_plan, phase_data
from lst.engine.distributed import pick_device
from lst.methods.logit_distillation import teacher_logits
from lst.modeling.checkpoint import load_checkpoint
from lst.modeling.mask_rcnn import build_model
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, split_dir, image_root, previous_path, out = require(
        cfg,
        "paths.data_dir",
        "paths.split_dir",
        "dataset.image_root",
        "paths.previous",
        "paths.teacher_logits",
    )
    phase = cfg["phase"]
    teacher_checkpoint = load_checkpoint(previous_path, required=("model", "category_ids", "config"))
    teacher = build_model(teacher_checkpoint["config"]["model"], 1 + len(teacher_checkpoint["category_ids"]))
    teacher.load_state_dict(teacher_checkpoint["model"])
    teacher.to(pick_device(cfg["device"]))
    data = phase_data(data_dir, split_dir, phase, "train", image_root, with_masks=False)
    plan = load_phase_plan(split_dir)
    new_ids = set(plan.loc[plan["phase"] == phase, "category_id"].tolist())
    table = teacher_logits(teacher, data, new_ids, cfg["eval"]["batch_size"])
    tables.write_arrow(table, out)
    log.info("wrote %s: %d rows of %d logits", out, table.num_rows, table.schema.field("logits").type.list_size)


if __name__ == "__main__":
    main()
