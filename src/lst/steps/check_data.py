"""Images on disk and masks that decode, for both splits, checked before any training starts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lst.data import tables
from lst.data.checks import check_images, check_segmentations, raise_for_problems
from lst.data.lvis_json import describe_roots
from lst.io import write_text_atomic
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    data_dir, image_root, report_path = require(cfg, "paths.data_dir", "dataset.image_root", "paths.report")
    data_dir = Path(data_dir)
    images = tables.read_table(data_dir / "images.parquet", tables.IMAGES)
    annotations = tables.read_table(data_dir / "annotations.parquet", tables.ANNOTATIONS)
    log.info("checking %d images under %s", len(images), describe_roots(image_root))
    report = check_images(images, image_root, decode=cfg["check"]["decode_images"], workers=cfg["check"]["workers"])
    log.info("checking the segmentations of %d annotations", len(annotations))
    check_segmentations(annotations, images, report)
    raise_for_problems(report, data_dir, image_root)
    write_text_atomic(Path(report_path), report.markdown())
    log.info("all %d images and %d segmentations are fine", report.images, report.annotations)


if __name__ == "__main__":
    main()
