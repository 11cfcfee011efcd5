"""LST's RoI heads: torchvision's, with the classification loss and test-time scores a method chooses.

One ``forward`` in torchvision's order (box branch, then mask branch) with three changes:
- **classification**: ``classification(class_logits, labels)`` is the RoI classification loss and
  ``classification.scores(class_logits)`` the detection scores at test time (``[R, 1+C]``, column 0 the
  background): a method's (lst.methods) or, by default, lst.losses' ``SoftmaxCrossEntropy``, torchvision's own;
- **box regression**: smooth-L1 with ``box_loss_beta`` (torchvision hard-codes 1/9, the released code 1);
- **targets**: positives restricted to each sample's target class (LST's sampling, ``restrict_positives``),
  and mask targets from :class:`lst.data.masks.InstanceMasks` rasterised for the positive RoIs alone
  (full-image ``masks`` work as in torchvision).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss
from torchvision.ops import boxes as box_ops

from lst.data.masks import INSTANCE_MASKS
from lst.losses.cross_entropy import SoftmaxCrossEntropy

TORCHVISION_BOX_LOSS_BETA = 1 / 9  # torchvision's fastrcnn_loss


def mask_loss(mask_logits: torch.Tensor, labels: torch.Tensor, mask_targets: torch.Tensor) -> torch.Tensor:
    """torchvision's ``maskrcnn_loss`` on given targets: BCE of each RoI's logits for its label."""
    if mask_targets.numel() == 0:  # binary_cross_entropy_with_logits takes no empty input
        return mask_logits.sum() * 0
    chosen = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(chosen, mask_targets)


def restrict_positives(labels: torch.Tensor, target_label: int, fallback: int | None = None) -> torch.Tensor:
    """LST's target-class sampling for one image's RoI labels (-1 ignored, 0 background, >0 class).

    Positives are only the RoIs matched to ``target_label``; RoIs matched to other classes are left out
    (-1) of the box loss. If no RoI matches the target, the first ``fallback`` positives of any class (in
    proposal order) stay, as the released sampler does (None: every positive). ``target_label`` 0 means
    the sample has no target class.
    """
    if target_label <= 0:
        return labels
    on_target = labels == target_label
    if not on_target.any():
        if fallback is None:
            return labels
        kept = torch.where(labels > 0)[0][:fallback]
        on_target = torch.zeros_like(on_target)
        on_target[kept] = True
    return torch.where((labels > 0) & ~on_target, torch.full_like(labels, -1), labels)


def set_classification(roi_heads: RoIHeads, classification: nn.Module) -> None:
    """Give ``roi_heads`` a method's classification loss and scores. A plain attribute, not a submodule: the
    model's state dict stays the architecture's, the loss's own state (lst.engine) is saved beside it."""
    roi_heads.__dict__["classification"] = classification


class LstRoIHeads(RoIHeads):
    """torchvision's RoI heads with a method's classification, a box-loss beta and LST's targets (module doc)."""

    fallback_positives: int | None = None  # restrict_positives' fallback, set by build_model
    box_loss_beta: float = TORCHVISION_BOX_LOSS_BETA
    classification: nn.Module = SoftmaxCrossEntropy()
    _target_labels: list[int] | None = None

    def check_targets(self, targets):  # noqa: ANN001 - torchvision's signature
        """torchvision's check, with InstanceMasks accepted for ``masks``."""
        if targets is None or not all("boxes" in t and "labels" in t for t in targets):
            raise ValueError("every training target needs boxes and labels")
        if self.has_mask() and not all("masks" in t or INSTANCE_MASKS in t for t in targets):
            raise ValueError(f"every training target needs masks or {INSTANCE_MASKS}")

    def select_training_samples(self, proposals, targets):  # noqa: ANN001 - torchvision's signature
        self._target_labels = [int(t.get("target_label", 0)) for t in targets]
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._target_labels = None

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):  # noqa: ANN001
        matched_idxs, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        if self._target_labels is not None:
            fallback = self.fallback_positives
            labels = [restrict_positives(lab, t, fallback) for lab, t in zip(labels, self._target_labels, strict=True)]
        return matched_idxs, labels

    def box_losses(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """torchvision's ``fastrcnn_loss`` with this head's classification and smooth-L1 beta."""
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        classification_loss = self.classification(class_logits, labels)
        positive = torch.where(labels > 0)[0]
        box_regression = box_regression.reshape(class_logits.shape[0], box_regression.size(-1) // 4, 4)
        box_loss = F.smooth_l1_loss(
            box_regression[positive, labels[positive]],
            regression_targets[positive],
            beta=self.box_loss_beta,
            reduction="sum",
        )
        return {"loss_classifier": classification_loss, "loss_box_reg": box_loss / labels.numel()}

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):  # noqa: ANN001
        """torchvision's, scoring with this head's classification: per class above the threshold, NMS, top k."""
        scores = self.classification.scores(class_logits)  # [R, 1+C]; the logits may have more columns (Seesaw)
        num_classes = scores.shape[-1]
        boxes_per_image = [len(boxes) for boxes in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals).split(boxes_per_image, 0)
        pred_scores = scores.split(boxes_per_image, 0)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, image_shape in zip(pred_boxes, pred_scores, image_shapes, strict=True):
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
            labels = torch.arange(num_classes, device=class_logits.device).view(1, -1).expand_as(scores)
            # every class of every box a candidate, background left out
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: ANN001 - torchvision's signature
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_outputs(features, proposals, image_shapes)
        if not self.training:
            boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            result = [{"boxes": b, "labels": c, "scores": s} for b, s, c in zip(boxes, scores, labels, strict=True)]
            if self.has_mask():
                mask_logits = self.mask_logits(features, [r["boxes"] for r in result], image_shapes)
                for masks, r in zip(maskrcnn_inference(mask_logits, labels), result, strict=True):
                    r["masks"] = masks
            return result, {}
        losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
        if self.has_mask():
            losses["loss_mask"] = self._mask_loss(features, proposals, matched_idxs, labels, image_shapes, targets)
        return [], losses

    def box_outputs(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[R, 1+C]`` and box deltas ``[R, 4(1+C)]`` of the given boxes (xyxy in the transformed
        images' pixels, as proposals are) from the FPN ``features``."""
        return self.box_predictor(self.box_head(self.box_roi_pool(features, boxes, image_shapes)))

    def mask_logits(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Mask logits ``[R, 1+C, M, M]`` of the given boxes from the FPN ``features``."""
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))

    def _mask_loss(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
        labels: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Any]],
    ) -> torch.Tensor:
        """The mask loss of the positive RoIs, on InstanceMasks targets or torchvision's full-image masks."""
        positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
        boxes = [p[i] for p, i in zip(proposals, positive, strict=True)]
        matched = [m[i] for m, i in zip(matched_idxs, positive, strict=True)]
        mask_logits = self.mask_logits(features, boxes, image_shapes)
        if not all(INSTANCE_MASKS in t for t in targets):
            return maskrcnn_loss(
                mask_logits, boxes, [t["masks"] for t in targets], [t["labels"] for t in targets], matched
            )
        size = mask_logits.shape[-1]
        mask_targets = [
            t[INSTANCE_MASKS].crop_and_resize(b, m, shape, size)
            for t, b, m, shape in zip(targets, boxes, matched, image_shapes, strict=True)
        ]
        gt_labels = torch.cat([t["labels"][m] for t, m in zip(targets, matched, strict=True)])
        return mask_loss(mask_logits, gt_labels, torch.cat(mask_targets).to(mask_logits.device))
