"""LVIS/COCO segmentations as pycocotools RLEs: the one decoding of polygons and RLE that training and the
evaluator share. Torch-free; pycocotools is imported on first use (``lst-eval`` starts without it)."""

from __future__ import annotations

from typing import Any


def segmentation_rle(segmentation: list | dict, height: int, width: int) -> dict[str, Any]:
    """The compressed RLE of a segmentation on a ``height`` x ``width`` image, as lvis-api's ``ann_to_rle``:
    polygons (flat x, y lists or arrays) merged into one mask, an uncompressed RLE (``counts`` a list)
    compressed, a compressed RLE as it is."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation
