"""Mask targets kept as polygons (or image-size RLE bitmaps) and rasterised only for the positive RoIs.

torchvision trains Mask R-CNN on full-image masks: one H x W mask per annotation, resized with the image
(in float32) and cropped by RoIAlign. On LVIS images with hundreds of annotations, at 800 x 1333, that
is gigabytes per image. Here a target's ``instance_masks`` (:class:`InstanceMasks`) keeps each
annotation's polygons in image coordinates; only the RoIs of the mask loss get an M x M target, by
rasterising their matched polygons inside the RoI's box with pycocotools (as detectron2's
``PolygonMasks.crop_and_resize``). RLE annotations are decoded at image resolution (uint8) and cropped
with RoIAlign, for the RoIs that need it. The mask loss on these targets is lst.modeling.roi_heads'.

Geometry: pixel c covers [c, c+1), as in pycocotools (a pixel is in a polygon when its centre is). The
model resizes images and boxes after loading; rather than scaling every vertex, the RoIs are mapped back
to the image's own frame by the same per-axis ratios (the same rasterisation, since both the polygon and
the box would be scaled). A horizontal flip acts on the polygon coordinates (x -> W - x).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import roi_align

from lst.data.segmentation import segmentation_rle
from lst.errors import DataError

INSTANCE_MASKS = "instance_masks"  # the target key
MIN_EXTENT = 0.1  # pixels: a thinner RoI is rasterised as this wide (keeps the scaled coordinates finite)


def parse_segmentation(segmentation: str | list | dict) -> list | dict:
    """An LVIS/COCO segmentation (JSON text or parsed): a list of polygons, or an RLE dict."""
    return json.loads(segmentation) if isinstance(segmentation, str) else segmentation


def segmentation_to_mask(segmentation: str | list | dict, height: int, width: int) -> np.ndarray:
    """Binary mask (H, W, uint8) of an LVIS/COCO segmentation: polygons, or RLE (raw or compressed)."""
    return mask_utils.decode(segmentation_rle(parse_segmentation(segmentation), height, width))


def rasterize_in_box(polygons: list[np.ndarray], box: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 mask of the polygons (flat x, y arrays) inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    scale_x = size / max(x1 - x0, MIN_EXTENT)
    scale_y = size / max(y1 - y0, MIN_EXTENT)
    local = []
    for polygon in polygons:
        shifted = np.empty_like(polygon)
        shifted[0::2] = (polygon[0::2] - x0) * scale_x
        shifted[1::2] = (polygon[1::2] - y0) * scale_y
        local.append(shifted)
    return mask_utils.decode(segmentation_rle(local, size, size))


def crop_bitmasks(bitmasks: torch.Tensor, rows: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(P, size, size) {0, 1} float crops of ``bitmasks[rows]`` (uint8, N x H x W) in ``boxes`` (image pixels).

    RoIAlign with aligned=True (pixel c centred at c + 0.5, as the polygons), thresholded at 0.5 so that
    RLE and polygon annotations give the same kind of target.
    """
    used, index = torch.unique(rows, return_inverse=True)
    rois = torch.cat([index[:, None].to(boxes), boxes], dim=1)
    crops = roi_align(bitmasks[used][:, None].float(), rois, (size, size), 1.0, sampling_ratio=0, aligned=True)
    return (crops[:, 0] >= 0.5).float()


class InstanceMasks:
    """The masks of one image's annotations in its own pixel frame: polygons, or a bitmap for RLEs.

    ``polygons[i]`` is annotation i's list of flat (x0, y0, x1, y1, ...) float64 arrays, or None when it
    came as an RLE: then ``bitmasks[bitmask_rows[i]]`` is its decoded (H, W) uint8 mask.
    """

    def __init__(
        self, height: int, width: int, polygons: list[list[np.ndarray] | None], bitmasks: torch.Tensor
    ) -> None:
        self.height, self.width = height, width
        self.polygons = polygons
        self.bitmasks = bitmasks
        is_rle = np.array([p is None for p in polygons], dtype=bool)
        self.bitmask_rows = np.where(is_rle, np.cumsum(is_rle) - 1, -1)
        if len(bitmasks) != is_rle.sum() or tuple(bitmasks.shape[1:]) != (height, width):
            raise DataError(f"{is_rle.sum()} RLE annotations on a {height}x{width} image, bitmasks {bitmasks.shape}")

    @classmethod
    def from_segmentations(cls, segmentations: Iterable[str | list | dict], height: int, width: int) -> InstanceMasks:
        """From LVIS/COCO segmentations (JSON text or parsed) of an image of ``height`` x ``width``."""
        polygons: list[list[np.ndarray] | None] = []
        bitmasks = []
        for segmentation in map(parse_segmentation, segmentations):
            if isinstance(segmentation, list):
                polygons.append([np.asarray(p, dtype=np.float64) for p in segmentation])
                continue
            mask = mask_utils.decode(segmentation_rle(segmentation, height, width))
            if mask.shape != (height, width):
                raise DataError(f"an RLE of size {list(mask.shape)} on a {height}x{width} image")
            polygons.append(None)
            bitmasks.append(torch.from_numpy(mask))
        stacked = torch.stack(bitmasks) if bitmasks else torch.zeros((0, height, width), dtype=torch.uint8)
        return cls(height, width, polygons, stacked)

    def __len__(self) -> int:
        return len(self.polygons)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> InstanceMasks:
        """Itself: the masks stay on the CPU, where targets are rasterised; only the M x M targets move."""
        return self

    def flip(self) -> InstanceMasks:
        """The masks of the horizontally flipped image."""
        flipped = []
        for polygons in self.polygons:
            if polygons is None:
                flipped.append(None)
                continue
            flipped.append([_flip_x(p, self.width) for p in polygons])
        return InstanceMasks(self.height, self.width, flipped, self.bitmasks.flip(-1))

    def full_masks(self) -> torch.Tensor:
        """(N, H, W) uint8 full-image masks: what torchvision's own mask loss takes as ``masks``."""
        masks = torch.zeros((len(self), self.height, self.width), dtype=torch.uint8)
        for i, polygons in enumerate(self.polygons):
            if polygons is None:
                masks[i] = self.bitmasks[self.bitmask_rows[i]]
            else:
                masks[i] = torch.from_numpy(mask_utils.decode(segmentation_rle(polygons, self.height, self.width)))
        return masks

    def crop_and_resize(
        self, boxes: torch.Tensor, matched: torch.Tensor, image_shape: tuple[int, int], size: int
    ) -> torch.Tensor:
        """(P, size, size) float32 {0, 1} targets of RoIs ``boxes`` (P x 4, xyxy in the model's resized
        image of ``image_shape`` (h, w)) for annotations ``matched`` (P), on the CPU."""
        targets = torch.zeros((len(boxes), size, size), dtype=torch.float32)
        if len(boxes) == 0:
            return targets
        # the model resized image and boxes by these per-axis ratios; map the RoIs back to this frame
        ratio_y, ratio_x = image_shape[0] / self.height, image_shape[1] / self.width
        frame = boxes.detach().cpu().double() / torch.tensor([ratio_x, ratio_y, ratio_x, ratio_y], dtype=torch.float64)
        matched = matched.cpu()
        rows = torch.from_numpy(self.bitmask_rows)[matched]
        for k in torch.where(rows < 0)[0].tolist():
            mask = rasterize_in_box(self.polygons[int(matched[k])], frame[k].numpy(), size)
            targets[k] = torch.from_numpy(mask)
        from_rle = torch.where(rows >= 0)[0]
        if len(from_rle):
            targets[from_rle] = crop_bitmasks(self.bitmasks, rows[from_rle], frame[from_rle].float(), size)
        return targets


def _flip_x(polygon: np.ndarray, width: int) -> np.ndarray:
    flipped = polygon.copy()
    flipped[0::2] = width - polygon[0::2]
    return flipped
