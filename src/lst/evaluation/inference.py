"""Run a model over images and keep its detections as columns (boxes, scores, classes, mask RLEs)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from pycocotools import mask as mask_utils
from torch import nn

from lst.data.dataset import DetectionData
from lst.engine import distributed
from lst.errors import ConfigError
from lst.modeling.mask_rcnn import model_device

log = logging.getLogger(__name__)


@torch.inference_mode()
def detect(
    model: nn.Module,
    data: DetectionData,
    batch_size: int,
    log_period: int = 20,
    amp: str = "off",
    channels_last: bool = False,
) -> pd.DataFrame:
    """Detections of ``model`` on every image of ``data``, in the DETECTIONS table layout.

    ``amp`` (off, bf16, fp16 on GPUs) runs the model under autocast (the box predictor stays in float32);
    ``channels_last`` converts its convolution weights to NHWC first. One process: evaluation is cheap next
    to training and the LVIS evaluation needs every detection in one place.
    """
    model.eval()
    device = model_device(model)
    try:
        amp = distributed.amp_mode(amp, device)
    except ConfigError as error:  # the evaluation's amp: name its section
        raise ConfigError(f"eval.{error}") from None
    if channels_last:
        distributed.channels_last(model)
    image_ids = data.image_ids()
    columns: dict[str, list] = {k: [] for k in ("image_id", "category_id", "score", "boxes", "rle_counts")}
    started = time.perf_counter()
    for batch_index, start in enumerate(range(0, len(image_ids), batch_size), start=1):
        ids = image_ids[start : start + batch_size]
        images = [data.load(image_id)[0].to(device) for image_id in ids]
        with distributed.autocast(device, amp):
            outputs = model(images)
        for image_id, output in zip(ids, outputs, strict=True):
            # float32 for numpy and the table, whatever autocast produced
            output = {
                key: value.float().cpu() if value.is_floating_point() else value.cpu() for key, value in output.items()
            }
            masks = (output["masks"][:, 0] > 0.5).numpy()
            rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
            columns["image_id"].append(np.full(len(rles), image_id, dtype=np.int64))
            columns["category_id"].append(data.category_ids[output["labels"].numpy() - 1])
            columns["score"].append(output["scores"].numpy().astype(np.float32))
            columns["boxes"].append(output["boxes"].numpy().astype(np.float32).reshape(-1, 4))
            columns["rle_counts"].extend(rle["counts"] for rle in rles)
        if batch_index % log_period == 0:
            done = min(start + batch_size, len(image_ids))
            rate = done / (time.perf_counter() - started)
            log.info("inference %d/%d images  %.1f img/s", done, len(image_ids), rate)
    boxes = np.concatenate(columns["boxes"]) if columns["boxes"] else np.zeros((0, 4), np.float32)
    return pd.DataFrame(
        {
            "image_id": _concat(columns["image_id"], np.int64),
            "category_id": _concat(columns["category_id"], np.int64),
            "score": _concat(columns["score"], np.float32),
            "x": boxes[:, 0],
            "y": boxes[:, 1],
            "w": boxes[:, 2] - boxes[:, 0],
            "h": boxes[:, 3] - boxes[:, 1],
            "rle_counts": pd.Series(columns["rle_counts"], dtype=object),
        }
    )


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def ground_truth(images: pd.DataFrame, annotations: pd.DataFrame, categories: pd.DataFrame) -> dict[str, Any]:
    """LVIS-format ground truth of a phase's val set: seen classes only, in lists and in annotations (crowd
    regions, from an ``iscrowd`` column, flagged as in COCO)."""
    seen = set(categories["category_id"].tolist())
    annotations = annotations[annotations["category_id"].isin(seen) & annotations["image_id"].isin(images["image_id"])]
    return {
        "images": [
            {
                "id": int(row.image_id),
                "width": int(row.width),
                "height": int(row.height),
                "neg_category_ids": [int(c) for c in row.neg_category_ids if c in seen],
                "not_exhaustive_category_ids": [int(c) for c in row.not_exhaustive_category_ids if c in seen],
            }
            for row in images.itertuples()
        ],
        "annotations": [
            {
                "id": int(row.annotation_id),
                "image_id": int(row.image_id),
                "category_id": int(row.category_id),
                "bbox": [float(row.x), float(row.y), float(row.w), float(row.h)],
                "area": float(row.area),
                "segmentation": json.loads(row.segmentation),
                "iscrowd": int(getattr(row, "iscrowd", False)),
            }
            for row in annotations.itertuples()
        ],
        "categories": [
            {"id": int(row.category_id), "name": row.name, "frequency": row.frequency}
            for row in categories.itertuples()
        ],
    }
