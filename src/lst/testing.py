"""Generators shared by the tests and the benchmarks (torch-free): small LVIS-format files and their images,
detections as ``lst.evaluation.lvis_eval`` takes them, and the same detections as an LVIS results list (lvis-api's
input).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

# the columns of a detection record, as ``detection_frame`` takes them
RECORD = ("image_id", "category_id", "x", "y", "w", "h", "rle_counts")


def write_lvis(path: str | Path, data: dict[str, Any]) -> Path:
    """An LVIS-format (or COCO) dict written as json at ``path``."""
    path = Path(path)
    path.write_text(json.dumps(data))
    return path


def _plain(image: dict[str, Any]) -> tuple[int, int, int]:
    return (90, 30, 200)


def image_file(image: dict[str, Any]) -> str:
    """Where an image of an LVIS json lies under its image folder: ``file_name``, else ``<folder>/<name>`` of
    its ``coco_url``."""
    return image.get("file_name") or "/".join(image["coco_url"].split("/")[-2:])


def draw_images(
    root: str | Path, data: dict[str, Any], colour: Callable[[dict[str, Any]], tuple[int, int, int]] = _plain
) -> None:
    """A one-colour RGB PNG of each image's annotated size under ``root``, where the json places it."""
    for image in data["images"]:
        path = Path(root) / image_file(image)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (image["width"], image["height"]), colour(image)).save(path)


def detection_frame(records: Sequence[tuple], score: np.ndarray) -> pd.DataFrame:
    """Detections as columns (``lst.evaluation.lvis_eval``'s layout) from records of :data:`RECORD` and their scores."""
    columns = list(zip(*records, strict=True)) if records else [[]] * len(RECORD)
    return pd.DataFrame(
        {
            "image_id": np.array(columns[0], dtype=np.int64),
            "category_id": np.array(columns[1], dtype=np.int64),
            "score": np.asarray(score).astype(np.float32),
            **{name: np.array(columns[i], dtype=np.float32) for i, name in enumerate("xywh", start=2)},
            "rle_counts": pd.Series(list(columns[6]), dtype=object),
        }
    )


def lvis_results(gt: dict[str, Any], dets: pd.DataFrame, iou_type: str, with_bbox: bool = False) -> list[dict]:
    """The same detections as an LVIS results list. segm results carry a bbox only ``with_bbox``: lvis-api
    then sizes them by box area (``det_area="box"``), without by mask area (as lst.evaluation.lvis_eval does by
    default)."""
    size = {image["id"]: [image["height"], image["width"]] for image in gt["images"]}
    image_ids = dets["image_id"].tolist()
    scores = dets["score"].astype(np.float64).tolist()
    records = [
        {"image_id": i, "category_id": c, "score": s}
        for i, c, s in zip(image_ids, dets["category_id"].tolist(), scores, strict=True)
    ]
    if iou_type == "bbox" or with_bbox:
        for record, box in zip(records, dets[["x", "y", "w", "h"]].to_numpy(np.float64).tolist(), strict=True):
            record["bbox"] = box
    if iou_type == "segm":
        for record, i, counts in zip(records, image_ids, dets["rle_counts"].tolist(), strict=True):
            text = counts.decode() if isinstance(counts, bytes) else counts
            record["segmentation"] = {"size": size[i], "counts": text}
    return records
