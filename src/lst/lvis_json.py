"""Parse LVIS-format json (v0.5, v1, or the embedded demo) into columnar tables, once.

The decoder is typed (msgspec): each segmentation is kept as raw json text and decoded only where
masks are needed, which keeps a 1 GB LVIS file fast and small to ingest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# Boxes smaller than this (pixels, either side) are skipped, as detectron2 does.
MIN_BOX_SIDE = 1e-2


class DataError(ValueError):
    """An input dataset file that is corrupt, with the file and the problem in the message."""


class _Image(msgspec.Struct):
    id: int
    width: int
    height: int
    file_name: str | None = None
    coco_url: str | None = None
    neg_category_ids: list[int] = []
    not_exhaustive_category_ids: list[int] = []


class _Annotation(msgspec.Struct):
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    segmentation: msgspec.Raw
    area: float | None = None


class _Category(msgspec.Struct):
    id: int
    name: str
    frequency: str | None = None


class _LvisFile(msgspec.Struct):
    images: list[_Image]
    annotations: list[_Annotation]
    categories: list[_Category]


@dataclass
class LvisTables:
    images: pd.DataFrame
    annotations: pd.DataFrame
    categories: pd.DataFrame


def image_file_name(image: _Image) -> str:
    """Path relative to the image root: ``file_name`` (v0.5, demo) or ``<split>2017/<name>`` from coco_url (v1)."""
    if image.file_name:
        return image.file_name
    if image.coco_url:
        return "/".join(image.coco_url.rstrip("/").split("/")[-2:])
    raise DataError(f"image {image.id} has neither file_name nor coco_url")


def _check_unique(ids: np.ndarray, what: str, path: Path) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    duplicated = unique[counts > 1]
    if len(duplicated):
        raise DataError(f"{path}: duplicate {what} ids {duplicated[:5].tolist()} ({len(duplicated)} in all)")


def read_lvis_json(path: str | Path, split: str) -> LvisTables:
    """Decode and validate one LVIS json; raise DataError naming ``path`` and the problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from error
    try:
        data = msgspec.json.decode(raw, type=_LvisFile)
    except msgspec.ValidationError as error:
        raise DataError(f"{path}: not an LVIS-format file: {error}") from error
    except msgspec.DecodeError as error:
        raise DataError(f"{path}: not valid json: {error}") from error
    del raw
    if not data.categories:
        raise DataError(f"{path}: has no categories")

    categories = pd.DataFrame(
        {
            "category_id": np.array([c.id for c in data.categories], dtype=np.int64),
            "name": [c.name for c in data.categories],
            "frequency": [c.frequency or "" for c in data.categories],
        }
    )
    _check_unique(categories["category_id"].to_numpy(), "category", path)

    try:
        file_names = [image_file_name(im) for im in data.images]
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    images = pd.DataFrame(
        {
            "image_id": np.array([im.id for im in data.images], dtype=np.int64),
            "split": split,
            "width": np.array([im.width for im in data.images], dtype=np.int32),
            "height": np.array([im.height for im in data.images], dtype=np.int32),
            "file_name": file_names,
            "neg_category_ids": [im.neg_category_ids for im in data.images],
            "not_exhaustive_category_ids": [im.not_exhaustive_category_ids for im in data.images],
        }
    )
    _check_unique(images["image_id"].to_numpy(), "image", path)
    bad_size = images[(images["width"] <= 0) | (images["height"] <= 0)]
    if len(bad_size):
        raise DataError(f"{path}: images {bad_size['image_id'].head(5).tolist()} have a non-positive size")
    known_categories = set(categories["category_id"].tolist())
    for column in ("neg_category_ids", "not_exhaustive_category_ids"):
        listed = {c for ids in images[column] for c in ids}
        unknown = sorted(listed - known_categories)
        if unknown:
            raise DataError(f"{path}: images list unknown category ids in {column}: {unknown[:5]}")

    annotations = _annotation_table(data.annotations, split, path)
    del data
    unknown_images = ~annotations["image_id"].isin(images["image_id"])
    if unknown_images.any():
        ids = annotations.loc[unknown_images, "annotation_id"].head(5).tolist()
        raise DataError(f"{path}: annotations {ids} refer to unknown image ids ({int(unknown_images.sum())} in all)")
    unknown_categories = ~annotations["category_id"].isin(categories["category_id"])
    if unknown_categories.any():
        ids = annotations.loc[unknown_categories, "annotation_id"].head(5).tolist()
        raise DataError(
            f"{path}: annotations {ids} refer to unknown category ids ({int(unknown_categories.sum())} in all)"
        )
    annotations = _clip_boxes(annotations, images, path)
    return LvisTables(images=images, annotations=annotations, categories=categories)


def _annotation_table(annotations: list[_Annotation], split: str, path: Path) -> pd.DataFrame:
    boxes = np.array([a.bbox for a in annotations], dtype=np.float64).reshape(-1, 4)
    table = pd.DataFrame(
        {
            "annotation_id": np.array([a.id for a in annotations], dtype=np.int64),
            "image_id": np.array([a.image_id for a in annotations], dtype=np.int64),
            "split": split,
            "category_id": np.array([a.category_id for a in annotations], dtype=np.int64),
            "x": boxes[:, 0],
            "y": boxes[:, 1],
            "w": boxes[:, 2],
            "h": boxes[:, 3],
            "area": np.array([np.nan if a.area is None else a.area for a in annotations], dtype=np.float64),
            "segmentation": [bytes(a.segmentation).decode() for a in annotations],
        }
    )
    _check_unique(table["annotation_id"].to_numpy(), "annotation", path)
    if not np.isfinite(boxes).all():
        bad = table.loc[~np.isfinite(boxes).all(axis=1), "annotation_id"].head(5).tolist()
        raise DataError(f"{path}: annotations {bad} have non-finite boxes")
    negative = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if negative.any():
        bad = table.loc[negative, "annotation_id"].head(5).tolist()
        raise DataError(f"{path}: annotations {bad} have a negative box width or height")
    empty = table["segmentation"].isin(["[]", "null", "{}", "[[]]"])
    if empty.any():
        bad = table.loc[empty, "annotation_id"].head(5).tolist()
        raise DataError(f"{path}: annotations {bad} have an empty segmentation")
    return table


def _clip_boxes(annotations: pd.DataFrame, images: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Clip boxes that overshoot the image (float rounding in LVIS), skip degenerate ones; log counts."""
    size = images.set_index("image_id").loc[annotations["image_id"], ["width", "height"]].to_numpy(np.float64)
    outside = (annotations["x"].to_numpy() >= size[:, 0]) | (annotations["y"].to_numpy() >= size[:, 1])
    outside |= (annotations["x"] + annotations["w"]).to_numpy() <= 0
    outside |= (annotations["y"] + annotations["h"]).to_numpy() <= 0
    if outside.any():  # no rounding puts a box wholly off its image: the ids or sizes are wrong
        bad = annotations.loc[outside, "annotation_id"].head(5).tolist()
        raise DataError(f"{path}: boxes of annotations {bad} lie outside their image ({int(outside.sum())} in all)")
    x0 = annotations["x"].to_numpy().clip(0, size[:, 0])
    y0 = annotations["y"].to_numpy().clip(0, size[:, 1])
    x1 = (annotations["x"] + annotations["w"]).to_numpy().clip(0, size[:, 0])
    y1 = (annotations["y"] + annotations["h"]).to_numpy().clip(0, size[:, 1])
    clipped = (x0 != annotations["x"].to_numpy()) | (x1 - x0 != annotations["w"].to_numpy())
    clipped |= (y0 != annotations["y"].to_numpy()) | (y1 - y0 != annotations["h"].to_numpy())
    annotations = annotations.assign(x=x0, y=y0, w=x1 - x0, h=y1 - y0)
    keep = (annotations["w"] > MIN_BOX_SIDE) & (annotations["h"] > MIN_BOX_SIDE)
    if clipped.any():
        log.info("%s: clipped %d boxes to their image", path, int(clipped.sum()))
    if not keep.all():
        log.warning("%s: skipped %d degenerate boxes (side <= %g px)", path, int((~keep).sum()), MIN_BOX_SIDE)
    annotations = annotations[keep].reset_index(drop=True)
    for column in ("x", "y", "w", "h"):
        annotations[column] = annotations[column].astype(np.float32)
    return annotations


def merge_splits(train: LvisTables, val: LvisTables, train_path: Path, val_path: Path) -> LvisTables:
    """One set of tables for both splits; categories come from the train file and must cover val's."""
    unknown = sorted(set(val.categories["category_id"]) - set(train.categories["category_id"]))
    if unknown:
        raise DataError(f"{val_path}: category ids {unknown[:5]} are not in {train_path}")
    shared = np.intersect1d(train.images["image_id"].to_numpy(), val.images["image_id"].to_numpy())
    if len(shared):
        raise DataError(f"{val_path}: image ids {shared[:5].tolist()} are also in {train_path}")
    shared = np.intersect1d(train.annotations["annotation_id"].to_numpy(), val.annotations["annotation_id"].to_numpy())
    if len(shared):
        raise DataError(f"{val_path}: annotation ids {shared[:5].tolist()} are also in {train_path}")
    return LvisTables(
        images=pd.concat([train.images, val.images], ignore_index=True),
        annotations=pd.concat([train.annotations, val.annotations], ignore_index=True),
        categories=train.categories,
    )
