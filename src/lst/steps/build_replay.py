"""Write an incremental phase's sample stream, as its method draws it (lst.methods: balanced replay of the old
classes, or the new classes only, or the method's own)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lst.data import tables
from lst.data.sampling import aspect_groups, per_process_batch, phase_seed, replay_quotas
from lst.methods import StreamRequest
from lst.steps import method_of, require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, split_dir, out = require(cfg, "paths.data_dir", "paths.split_dir", "paths.replay")
    phase, train_cfg, method, replay = cfg["phase"], cfg["train_phase"], method_of(cfg), cfg["replay"]
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
    train = annotations[(annotations["split"] == "train") & ~annotations["iscrowd"]]  # crowd regions: no targets
    seen = train["category_id"].isin(plan.loc[plan["phase"] <= phase, "category_id"])
    image_ids = np.sort(train.loc[seen, "image_id"].unique())  # the phase's cumulative set
    # the stream of every training process, each taking its share of the global batch
    local_batch = per_process_batch(train_cfg["batch_size"], replay["world_size"], "train_phase.batch_size")
    request = StreamRequest(
        plan, train, image_ids, phase, train_cfg["iterations"], local_batch, replay["world_size"],
        phase_seed(cfg["seed"], phase), train_cfg["flip_prob"], groups,
    )  # fmt: skip
    stream = method.stream(request)
    tables.write_table(stream, out, tables.REPLAY)
    new_ids = plan.loc[plan["phase"] == phase, "category_id"]
    old_samples = int((~stream["category_id"].isin(new_ids)).sum())
    if old_samples:
        quotas = replay_quotas(plan, phase, replay["quota_rounding"])
        log.info(
            "old-class quotas per epoch (%s rounding, first 10): %s",
            replay["quota_rounding"],
            quotas[["category_id", "quota"]].head(10).to_dict("records"),
        )
    log.info(
        "wrote %s: %d samples in %d epochs (%s draws, remainder %s, aspect grouping %s), %d of old classes",
        out, len(stream), stream["epoch"].nunique(), replay["variant"], replay["remainder"],
        "on" if groups is not None else "off", old_samples,
    )  # fmt: skip


if __name__ == "__main__":
    main()
