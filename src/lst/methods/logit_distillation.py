"""Logit distillation (docs/method.md section 5): the previous model's cosine scores on ground-truth boxes,
precomputed by extract_logits (``teacher_logits``) and matched by the student (``DistillationLoss``)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from lst.data.dataset import DetectionData
from lst.data.tables import logits_schema
from lst.engine import distributed
from lst.engine.trainer import Forward
from lst.errors import ConfigError
from lst.modeling.mask_rcnn import box_features

log = logging.getLogger(__name__)


def box_cosines(model: nn.Module, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
    """Cosine scores (no scale) of each given box over background + the model's classes, per image (a loss's
    extra logits, Seesaw's objectness, left out: LST distils class scores)."""
    features = box_features(model, images, boxes)
    predictor = model.roi_heads.box_predictor
    cosines = predictor.cosine(torch.cat(features))[:, : predictor.num_classes]
    return list(cosines.split([len(f) for f in features]))


@torch.inference_mode()
def teacher_logits(
    teacher: nn.Module, data: DetectionData, new_category_ids: set[int], batch_size: int, log_period: int = 20
) -> pa.Table:
    """One row per (image, new-class annotation, flip) with the teacher's cosine scores.

    ``data`` holds phase k's training images and annotations; only images with a new class are used.
    """
    teacher.eval()
    image_ids = [int(i) for i in data.image_ids() if data.annotations_of(i)["category_id"].isin(new_category_ids).any()]
    rows: dict[str, list] = {"image_id": [], "annotation_id": [], "flip": [], "logits": []}
    for batch_index, start in enumerate(range(0, len(image_ids), batch_size), start=1):
        for flip in (False, True):
            images, boxes, annotation_ids, batch_ids = [], [], [], []
            for image_id in image_ids[start : start + batch_size]:
                image, target = data.load(image_id, flip)
                new = torch.tensor(data.annotations_of(image_id)["category_id"].isin(new_category_ids).to_numpy())
                images.append(image)
                boxes.append(target["boxes"][new])
                annotation_ids.append(target["annotation_ids"][new])
                batch_ids.append(image_id)
            for image_id, ids, cos in zip(batch_ids, annotation_ids, box_cosines(teacher, images, boxes), strict=True):
                rows["image_id"].append(np.full(len(ids), image_id, dtype=np.int64))
                rows["annotation_id"].append(ids.numpy())
                rows["flip"].append(np.full(len(ids), flip))
                rows["logits"].append(cos.cpu().numpy().astype(np.float32))
        if batch_index % log_period == 0:
            log.info("teacher logits: %d/%d images", min(start + batch_size, len(image_ids)), len(image_ids))
    num_logits = teacher.roi_heads.box_predictor.num_classes  # background + classes
    logits = np.concatenate(rows["logits"]) if rows["logits"] else np.zeros((0, num_logits), np.float32)
    table = pd.DataFrame(
        {
            "image_id": np.concatenate(rows["image_id"]) if rows["image_id"] else np.zeros(0, np.int64),
            "annotation_id": np.concatenate(rows["annotation_id"]) if rows["annotation_id"] else np.zeros(0, np.int64),
            "flip": np.concatenate(rows["flip"]) if rows["flip"] else np.zeros(0, bool),
        }
    )
    schema = logits_schema(num_logits)
    flat = pa.array(logits.reshape(-1), type=pa.float32())
    columns = [
        pa.array(table[name].to_numpy(), type=schema.field(name).type) for name in ("image_id", "annotation_id", "flip")
    ]
    columns.append(pa.FixedSizeListArray.from_arrays(flat, num_logits))
    return pa.Table.from_arrays(columns, schema=schema).sort_by(
        [("image_id", "ascending"), ("flip", "ascending"), ("annotation_id", "ascending")]
    )


def group_box_counts(boxes_per_image: list[int], group_images: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """For each of this process's images, the distilled boxes of its group; and the number of groups.

    Groups are ``group_images`` consecutive images of the global batch (rank r holds images r*b .. r*b+b-1),
    so the released per-GPU normalisation (2 images per GPU) holds whatever the process layout.
    """
    local, rank, world = len(boxes_per_image), distributed.rank(), distributed.world_size()
    counts = torch.zeros(local * world, device=device)
    counts[rank * local : (rank + 1) * local] = torch.tensor(boxes_per_image, dtype=torch.float32, device=device)
    if world > 1:
        counts = distributed.all_reduce_sum(counts)
    group_of = torch.arange(local * world, device=device) // group_images
    num_groups = int(group_of[-1]) + 1
    per_group = torch.zeros(num_groups, device=device).index_add_(0, group_of, counts)
    return per_group[group_of[rank * local : (rank + 1) * local]], num_groups


class DistillationLoss:
    """Student-teacher L2 on cosine scores of old classes (background dropped), as the released code.

    Released: per GPU of 2 images, the squared differences summed over boxes / the boxes on that GPU;
    DDP averages over GPUs, a GPU without a distilled box contributing 0. Here: the mean over all
    groups of ``group_images`` consecutive images of the global batch of (sum over the group's boxes /
    its boxes), for any number of processes. The teacher's scores were extracted for the same images,
    boxes and flips (``teacher_logits``), so the student sees exactly the views the teacher scored.
    """

    def __init__(self, logits: pa.Table, weight: float = 1.0, group_images: int = 2):
        if group_images < 1:
            raise ConfigError(f"distill.group_images must be at least 1, got {group_images}")
        self.weight = weight
        self.group_images = group_images
        table = logits.to_pandas()
        values = np.stack(table["logits"].to_numpy()) if len(table) else np.zeros((0, 1), np.float32)
        self.num_logits = logits.schema.field("logits").type.list_size
        self._rows = {
            (int(image_id), bool(flip), int(annotation_id)): i
            for i, (image_id, flip, annotation_id) in enumerate(
                zip(table["image_id"], table["flip"], table["annotation_id"], strict=True)
            )
        }
        self._values = torch.from_numpy(values.astype(np.float32))

    def __call__(self, forward: Forward) -> dict[str, torch.Tensor]:
        """The term of a training iteration (a method's teacher terms, lst.methods.method)."""
        return self.loss(forward.model, forward.images, forward.targets)

    def loss(
        self, model: nn.Module, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """``loss_distill`` of the student ``model`` on the batch's boxes that the table holds."""
        chosen_images, boxes, teacher_rows, counts = [], [], [], []
        for image, target in zip(images, targets, strict=True):
            key = (int(target["image_id"]), bool(target["flip"]))
            rows = [self._rows.get((*key, int(a)), -1) for a in target["annotation_ids"]]
            keep = torch.tensor([r >= 0 for r in rows], dtype=torch.bool)
            counts.append(int(keep.sum()))
            if keep.any():
                chosen_images.append(image)
                boxes.append(target["boxes"][keep])
                teacher_rows += [r for r in rows if r >= 0]
        # every rank takes part in the count, also one without distilled boxes
        group_counts, num_groups = group_box_counts(counts, self.group_images, images[0].device)
        if not teacher_rows:
            return {"loss_distill": images[0].new_zeros(())}
        student = torch.cat(box_cosines(model, chosen_images, boxes))
        teacher = self._values[teacher_rows].to(student.device)
        per_box = (student[:, 1 : self.num_logits] - teacher[:, 1:]).pow(2).sum(dim=1)
        box_group_counts = torch.repeat_interleave(group_counts, torch.tensor(counts, device=group_counts.device))
        # DDP averages the ranks' gradients: x world size, so that they add up to the mean over all groups
        scale = self.weight * distributed.world_size() / num_groups
        return {"loss_distill": scale * (per_box / box_group_counts).sum()}
