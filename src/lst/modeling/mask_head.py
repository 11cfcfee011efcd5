"""The mask head's loss on :class:`lst.data.masks.InstanceMasks` targets, rasterised only for the positive RoIs.

The loss is torchvision's ``maskrcnn_loss`` (binary cross-entropy of each RoI's logits for its label); only
the targets change (see lst.data.masks).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads

from lst.data.masks import INSTANCE_MASKS


def mask_loss(mask_logits: torch.Tensor, labels: torch.Tensor, mask_targets: torch.Tensor) -> torch.Tensor:
    """torchvision's ``maskrcnn_loss`` on given targets: BCE of each RoI's logits for its label."""
    if mask_targets.numel() == 0:  # binary_cross_entropy_with_logits takes no empty input
        return mask_logits.sum() * 0
    chosen = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(chosen, mask_targets)


class MaskTargetRoIHeads(RoIHeads):
    """torchvision's RoI heads whose mask loss also takes :class:`InstanceMasks` targets.

    When every training target carries ``instance_masks``, torchvision's forward runs without its mask
    branch (box sampling and losses unchanged) and the mask loss is computed here on the same positive
    RoIs; otherwise (full-image ``masks``, evaluation) torchvision's forward runs as it is.
    """

    _box_branch_only = False
    _sampled: tuple | None = None

    def has_mask(self) -> bool:
        return not self._box_branch_only and super().has_mask()

    def select_training_samples(self, proposals, targets):  # noqa: ANN001 - torchvision's signature
        sampled = super().select_training_samples(proposals, targets)
        if self._box_branch_only:
            self._sampled = sampled  # proposals, matched_idxs, labels, regression targets
        return sampled

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: ANN001
        if not (self.training and targets and super().has_mask() and all(INSTANCE_MASKS in t for t in targets)):
            return super().forward(features, proposals, image_shapes, targets)
        self._box_branch_only = True
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            proposals, matched_idxs, labels, _ = self._sampled
        finally:
            self._box_branch_only, self._sampled = False, None
        losses["loss_mask"] = self._mask_loss(features, proposals, matched_idxs, labels, image_shapes, targets)
        return result, losses

    def _mask_loss(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
        labels: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Any]],
    ) -> torch.Tensor:
        """torchvision's mask branch in training: the positive RoIs, their logits, their targets."""
        positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
        boxes = [p[i] for p, i in zip(proposals, positive, strict=True)]
        matched = [m[i] for m, i in zip(matched_idxs, positive, strict=True)]
        mask_features = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        mask_logits = self.mask_predictor(mask_features)
        size = mask_logits.shape[-1]
        mask_targets = [
            t[INSTANCE_MASKS].crop_and_resize(b, m, shape, size)
            for t, b, m, shape in zip(targets, boxes, matched, image_shapes, strict=True)
        ]
        gt_labels = torch.cat([t["labels"][m] for t, m in zip(targets, matched, strict=True)])
        return mask_loss(mask_logits, gt_labels, torch.cat(mask_targets).to(mask_logits.device))
