"""LVIS json (train and val) -> images / annotations / categories Parquet, validated, parsed once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lst.data import tables
from lst.data.lvis_json import merge_splits, read_lvis_json
from lst.steps import require, step

log = logging.getLogger(__name__)

# The polygon texts are most of LVIS (about 1 GB for v1): snappy would triple the time to write them
# for a third less disk, so they are stored uncompressed; the other columns are small and compressed.
ANNOTATION_COMPRESSION = {name: "snappy" for name in tables.ANNOTATIONS.names} | {"segmentation": "none"}


@step
def main(cfg: dict[str, Any]) -> None:
    train_json, val_json, data_dir = require(cfg, "dataset.train_json", "dataset.val_json", "paths.data_dir")
    log.info("reading %s", train_json)
    train = read_lvis_json(train_json, "train")
    log.info("reading %s", val_json)
    val = read_lvis_json(val_json, "val")
    data = merge_splits(train, val, Path(train_json), Path(val_json))
    del train, val
    data_dir = Path(data_dir)
    tables.write_table(data.images, data_dir / "images.parquet", tables.IMAGES)
    tables.write_table(
        data.annotations, data_dir / "annotations.parquet", tables.ANNOTATIONS, compression=ANNOTATION_COMPRESSION
    )
    tables.write_table(data.categories, data_dir / "categories.parquet", tables.CATEGORIES)
    log.info(
        "wrote %s: %d images, %d annotations, %d categories",
        data_dir, data.images.num_rows, data.annotations.num_rows, data.categories.num_rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
