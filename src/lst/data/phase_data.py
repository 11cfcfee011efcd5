"""What one phase sees: its seen classes, and the images of its cumulative train or val set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lst.data import tables
from lst.data.dataset import DetectionData
from lst.data.lvis_json import image_roots
from lst.data.phase_plan import seen_categories
from lst.errors import ConfigError


def load_phase_plan(split_dir: str | Path) -> pd.DataFrame:
    return tables.read_table(Path(split_dir) / "categories.parquet", tables.PHASE_PLAN)


def phase_images(data_dir: str | Path, split_dir: str | Path, phase: int, split: str) -> pd.DataFrame:
    """Images of ``split`` in phase ``phase``'s cumulative set."""
    images = tables.read_table(Path(data_dir) / "images.parquet", tables.IMAGES)
    membership = tables.read_table(Path(split_dir) / "images.parquet", tables.PHASE_PLAN_IMAGES)
    member = membership[(membership["split"] == split) & (membership["first_phase"] <= phase)]
    images = images[images["split"] == split]  # ids are unique within a split only
    return images[images["image_id"].isin(member["image_id"])].reset_index(drop=True)


def load_annotations(data_dir: str | Path, split: str) -> pd.DataFrame:
    """Every annotation of ``split``, crowd regions included (``iscrowd``)."""
    annotations = tables.read_table(Path(data_dir) / "annotations.parquet", tables.ANNOTATIONS)
    return annotations[annotations["split"] == split].reset_index(drop=True)


def phase_data(
    data_dir: str | Path,
    split_dir: str | Path,
    phase: int,
    split: str,
    image_root: str | Path | dict[str, str],
    with_masks: bool = True,
) -> DetectionData:
    """Images of the cumulative set and the annotations of every class seen by ``phase``; ``image_root`` is
    ``dataset.image_root`` (one folder, or one per split)."""
    categories = seen_categories(load_phase_plan(split_dir), phase)
    if categories.empty:
        raise ConfigError(f"phase: phase {phase} has no classes")
    return DetectionData(
        phase_images(data_dir, split_dir, phase, split),
        load_annotations(data_dir, split),
        categories,
        image_roots(image_root)[split],
        with_masks=with_masks,
    )
