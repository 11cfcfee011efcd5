"""The online teacher: the previous phase's model, frozen, run on the student's batch in the same iteration.

For the incremental detectors that distil more than precomputed logits (ILOD, Faster ILOD, MMA): a method's
``teacher_terms`` builds an :class:`OnlineTeacher` from ``phase.previous`` and calls it on the trainer's
:class:`lst.engine.trainer.Forward`. The teacher sees exactly the student's input (the transformed, augmented
batch), in eval mode, without gradient and, under autocast, in the student's precision; it gives its FPN
features, its RPN head's raw outputs and its proposals (eval-mode RPN: after NMS, by objectness, at most
``rpn_post_nms_top_n_test`` per image), and the box and mask heads' outputs on any boxes. The student's own
features and RPN outputs of the same forward are ``forward.outputs``; its heads on given boxes are
``forward.model.roi_heads.box_outputs`` / ``mask_logits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lst.engine.trainer import Forward
from lst.modeling.mask_rcnn import build_model, recorded_outputs


@dataclass
class TeacherOutputs:
    """What the teacher computed on a batch (no gradient): features, RPN outputs, proposals."""

    teacher: nn.Module
    image_sizes: list[tuple[int, int]]
    features: dict[str, torch.Tensor]  # FPN maps by level
    objectness: list[torch.Tensor]  # RPN head's raw outputs per level: [N, A, H, W]
    anchor_deltas: list[torch.Tensor]  # [N, 4A, H, W]
    proposals: list[torch.Tensor]  # per image, [P, 4] xyxy in the transformed images' pixels, best first

    @torch.no_grad()
    def box_outputs(self, boxes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's class logits ``[R, 1+C_old]`` and box deltas ``[R, 4(1+C_old)]`` on ``boxes``."""
        return self.teacher.roi_heads.box_outputs(self.features, boxes, self.image_sizes)

    @torch.no_grad()
    def mask_logits(self, boxes: list[torch.Tensor]) -> torch.Tensor:
        """The teacher's mask logits ``[R, 1+C_old, M, M]`` on ``boxes``."""
        return self.teacher.roi_heads.mask_logits(self.features, boxes, self.image_sizes)


class OnlineTeacher:
    """The previous model (``checkpoint``: model, category_ids, config), frozen on ``device``. Not a module of the
    student: its parameters are neither trained, nor averaged by DDP, nor saved."""

    def __init__(self, checkpoint: dict[str, Any], device: torch.device):
        model = build_model(checkpoint["config"]["model"], num_classes=1 + len(checkpoint["category_ids"]))
        model.load_state_dict(checkpoint["model"])
        self.model = model.to(device).eval().requires_grad_(False)
        self.num_old = len(checkpoint["category_ids"])

    @torch.no_grad()
    def __call__(self, forward: Forward) -> TeacherOutputs:
        images = forward.outputs.images  # the student's transformed batch: the same augmented view
        features = self.model.backbone(images.tensors)
        with recorded_outputs(self.model) as rpn:  # the RPN head's outputs on the way to the proposals
            proposals, _ = self.model.rpn(images, features)
        return TeacherOutputs(self.model, images.image_sizes, features, rpn.objectness, rpn.anchor_deltas, proposals)
