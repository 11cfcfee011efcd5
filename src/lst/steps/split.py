"""Sort categories by training instances into a base phase and incremental phases (docs/method.md section 1).

Crowd regions (COCO's ``iscrowd``) are not instances: they count nowhere here, and an image holding only
crowd regions of a phase's classes is not in its set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from lst.data import tables
from lst.data.lvis_json import SPLITS
from lst.data.phase_plan import image_membership, phase_report, phase_sizes, phase_summary, plan_phases
from lst.io import write_text_atomic
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, split_dir = (Path(p) for p in require(cfg, "paths.data_dir", "paths.split_dir"))
    images = tables.read_table(data_dir / "images.parquet", tables.IMAGES)
    annotations = tables.read_table(
        data_dir / "annotations.parquet",
        tables.ANNOTATIONS,
        columns=["annotation_id", "image_id", "split", "category_id", "iscrowd"],
    )
    annotations = annotations[~annotations["iscrowd"]]
    categories = tables.read_table(data_dir / "categories.parquet", tables.CATEGORIES)
    sizes = phase_sizes(len(categories), **cfg["phases"])
    plan = plan_phases(categories, annotations[annotations["split"] == "train"], sizes)
    # images are keyed by (split, image_id): a train and a val file may reuse ids
    membership = pd.concat(
        [image_membership(images[images["split"] == s], annotations[annotations["split"] == s], plan) for s in SPLITS],
        ignore_index=True,
    )
    val_instances = annotations.loc[annotations["split"] == "val", "category_id"].value_counts()
    phases = phase_summary(plan, membership, val_instances)
    tables.write_table(plan, split_dir / "categories.parquet", tables.PHASE_PLAN)
    tables.write_table(membership, split_dir / "images.parquet", tables.PHASE_PLAN_IMAGES)
    tables.write_table(phases, split_dir / "phases.parquet", tables.PHASES)
    report = phase_report(phases)
    write_text_atomic(split_dir / "phases.md", report)
    log.info("phases (sizes %s):\n%s", sizes, report)


if __name__ == "__main__":
    main()
