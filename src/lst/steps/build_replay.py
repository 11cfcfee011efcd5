"""Write an incremental phase's sample stream: balanced replay of old classes (or new classes only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lst.data import tables
from lst.data.sampling import aspect_groups, phase_seed, replay_quotas, replay_stream
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, split_dir, out = require(cfg, "paths.data_dir", "paths.split_dir", "paths.replay")
    phase, train_cfg, method, replay = cfg["phase"], cfg["train_phase"], cfg["method"], cfg["replay"]
    # read with tables, not lst.data.phase_data, which would import torch (3 s) for nothing
    plan = tables.read_table(Path(split_dir) / "categories.parquet", tables.PHASE_PLAN)
    annotations = tables.read_table(
        Path(data_dir) / "annotations.parquet",
        tables.ANNOTATIONS,
        columns=["annotation_id", "image_id", "split", "category_id", "iscrowd"],
    )
    groups = None
    if train_cfg["aspect_grouping"]:
        images = tables.read_table(
            Path(data_dir) / "images.parquet", tables.IMAGES, columns=["image_id", "split", "width", "height"]
        )
        groups = aspect_groups(images[images["split"] == "train"])  # val may reuse the train ids
    stream = replay_stream(
        plan,
        annotations[(annotations["split"] == "train") & ~annotations["iscrowd"]],  # crowd regions: no targets
        phase,
        iterations=train_cfg["iterations"],
        batch_size=train_cfg["batch_size"],
        world_size=replay["world_size"],
        seed=phase_seed(cfg["seed"], phase),
        variant=replay["variant"],
        old_classes=method["replay"],
        flip_prob=train_cfg["flip_prob"],
        quota_rounding=replay["quota_rounding"],
        remainder=replay["remainder"],
        groups=groups,
    )
    tables.write_table(stream, out, tables.REPLAY)
    if method["replay"]:
        quotas = replay_quotas(plan, phase, replay["quota_rounding"])
        log.info(
            "old-class quotas per epoch (%s rounding, first 10): %s",
            replay["quota_rounding"],
            quotas[["category_id", "quota"]].head(10).to_dict("records"),
        )
    new_ids = plan.loc[plan["phase"] == phase, "category_id"]
    old_samples = int((~stream["category_id"].isin(new_ids)).sum())
    log.info(
        "wrote %s: %d samples in %d epochs (%s draws, remainder %s, aspect grouping %s), %d of old classes",
        out, len(stream), stream["epoch"].nunique(), replay["variant"], replay["remainder"],
        "on" if groups is not None else "off", old_samples,
    )  # fmt: skip


if __name__ == "__main__":
    main()
