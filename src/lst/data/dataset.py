"""Images and targets for training and inference, read from the Parquet tables.

A sample is (image_id, flip, target category); which samples a run sees, in which order and with
which flip, is decided up front by the sampler (lst.data.sampling), so training is deterministic and
resumable whatever the number of data-loading workers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from lst.data.masks import INSTANCE_MASKS, InstanceMasks
from lst.errors import DataError


def load_image(path: Path) -> torch.Tensor:
    """RGB float tensor (3, H, W) in [0, 1]."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class DetectionData:
    """The images of one split and the annotations of the classes a model knows.

    ``categories`` are the seen classes in label order (``rank`` column); label = position + 1.
    ``image_root`` is the split's image folder. Crowd regions (``iscrowd``) are kept apart in ``crowd``:
    no target holds them; only the evaluation reads them.
    """

    def __init__(
        self,
        images: pd.DataFrame,
        annotations: pd.DataFrame,
        categories: pd.DataFrame,
        image_root: str | Path,
        with_masks: bool = True,
    ):
        self.image_root = Path(image_root)
        self.with_masks = with_masks
        self.category_ids = categories["category_id"].to_numpy(np.int64)
        self.label_of = {int(c): i + 1 for i, c in enumerate(self.category_ids)}
        self.images = images.set_index("image_id", drop=False)
        known = annotations["category_id"].isin(self.label_of) & annotations["image_id"].isin(self.images.index)
        crowd = annotations["iscrowd"].to_numpy(bool) if "iscrowd" in annotations else np.zeros(len(annotations), bool)
        # the annotations this data serves: seen classes, on its images
        self.annotations = (
            annotations[known & ~crowd].sort_values("annotation_id", kind="stable").reset_index(drop=True)
        )
        self.crowd = annotations[known & crowd].sort_values("annotation_id", kind="stable").reset_index(drop=True)
        self._annotations = {int(i): group for i, group in self.annotations.groupby("image_id", sort=False)}

    def image_ids(self) -> np.ndarray:
        return self.images["image_id"].to_numpy(np.int64)

    def annotations_of(self, image_id: int) -> pd.DataFrame:
        return self._annotations.get(int(image_id), _EMPTY)

    def load(self, image_id: int, flip: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Image tensor and target dict (boxes xyxy, labels, annotation_ids, image_id, flip, and with masks
        ``instance_masks``: polygons rasterised only for the mask loss's RoIs, see lst.data.masks)."""
        row = self.images.loc[int(image_id)]
        image = load_image(self.image_root / row["file_name"])
        height, width = image.shape[1:]
        if (height, width) != (int(row["height"]), int(row["width"])):
            raise DataError(
                f"{self.image_root / row['file_name']}: image is {width}x{height} but the annotations say "
                f"{row['width']}x{row['height']}"
            )
        annotations = self.annotations_of(image_id)
        boxes = annotations[["x", "y", "w", "h"]].to_numpy(np.float32).reshape(-1, 4).copy()
        boxes[:, 2:] += boxes[:, :2]
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([self.label_of[int(c)] for c in annotations["category_id"]], dtype=torch.int64),
            "annotation_ids": torch.from_numpy(annotations["annotation_id"].to_numpy(np.int64).copy()),
            "image_id": torch.tensor(int(image_id)),
        }
        if self.with_masks:
            target[INSTANCE_MASKS] = InstanceMasks.from_segmentations(annotations["segmentation"], height, width)
        target["flip"] = torch.tensor(flip)
        if flip:
            image, target = hflip(image, target)
        return image, target


def hflip(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    if INSTANCE_MASKS in target:
        target[INSTANCE_MASKS] = target[INSTANCE_MASKS].flip()
    return image.flip(-1), target


_EMPTY = pd.DataFrame(
    {
        "annotation_id": pd.Series(dtype=np.int64),
        "category_id": pd.Series(dtype=np.int64),
        "x": pd.Series(dtype=np.float32),
        "y": pd.Series(dtype=np.float32),
        "w": pd.Series(dtype=np.float32),
        "h": pd.Series(dtype=np.float32),
        "segmentation": pd.Series(dtype=object),
    }
)


class SampleStream(torch.utils.data.Dataset):
    """A fixed sequence of (image_id, flip, category_id) samples, read in order by a DataLoader."""

    def __init__(self, data: DetectionData, samples: pd.DataFrame):
        self.data = data
        self.image_ids = samples["image_id"].to_numpy(np.int64)
        self.flips = samples["flip"].to_numpy(bool)
        self.target_labels = np.array([data.label_of.get(int(c), 0) for c in samples["category_id"]], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.image_ids)

    def digest(self) -> str:
        """Identifies the stream (images, flips, targets, in order)."""
        digest = hashlib.sha256()
        for array in (self.image_ids, self.flips, self.target_labels):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.data.load(self.image_ids[index], bool(self.flips[index]))
        target["target_label"] = torch.tensor(self.target_labels[index])
        return image, target


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
