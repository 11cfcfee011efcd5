"""Seesaw Loss (Wang et al., CVPR 2021) with its objectness branch: the model outputs C+2 logits.

Follows open-mmlab/mmdetection ``mmdet/models/losses/seesaw_loss.py`` (``seesaw_ce_loss``,
``SeesawLoss.forward``, ``get_cls_channels``, ``get_activation``) as its bbox head
(``mmdet/models/roi_heads/bbox_heads/bbox_head.py``, ``custom_cls_channels``) uses it.

**Layout.** The RoI head's classifier must output ``C + 2`` logits (``SeesawLoss(C, ...).num_logits``), not
torchvision's ``1 + C``: ``class_logits [R, C+2]`` has column 0 the objectness "background" logit, columns
1..C the classes and column C+1 the objectness "object" logit (mmdet's is ``[C classes, object, background]``).
Labels are lst's, 0..C with 0 the background; ``scores`` gives ``[R, 1+C]`` as every lst loss.

- Counts: the sampled RoIs of each label are added to ``cum_samples`` at the start of each call, before the
  loss, as mmdet does (per process: mmdet does not reduce them over the ranks).
- Class loss, on the positive RoIs only: cross-entropy over the C class logits, a RoI of class i adding
  ``log(M_ij C_ij)`` to each other class j's logit, with the mitigation ``M_ij = (N_j / N_i)^p`` where
  ``N_j < N_i`` (counts clamped at 1), else 1, and the compensation ``C_ij = (s_j / max(s_i, eps))^q`` where
  that ratio is above 1, else 1 (``s`` the softmax of the class logits, no gradient through it).
- Objectness loss, on all RoIs: 2-way cross-entropy, object for a positive RoI, background for the rest.
- Each summed and divided by R, the sampled RoIs (the bbox head's ``avg_factor``); ``loss_weight`` 1 each; the
  loss is their sum (mmdet returns both in a dict, whose entries the detector adds).
- Test-time scores: softmax over the classes times the objectness softmax's object probability; column 0 the
  objectness background probability (rows sum to 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lst.conf.typed import settings_from
from lst.losses import check_logits
from lst.losses.settings import SeesawSettings


class SeesawLoss(nn.Module):
    """Seesaw loss on ``[R, C+2]`` logits (module doc for the layout); ``num_classes`` is C. State: the buffer
    ``cum_samples`` ``[1+C]``, the sampled RoIs so far per label (index 0 the background). The class counts
    are not used; they are accepted for the common signature of lst.losses."""

    cum_samples: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        image_counts: Sequence[int] = (),
        num_images: int = 0,
        *,
        p: float = 0.8,
        q: float = 2.0,
        eps: float = 0.01,
    ):
        super().__init__()
        settings = settings_from(SeesawSettings, {"p": p, "q": q, "eps": eps}, "seesaw")
        self.num_classes = num_classes
        self.num_logits = num_classes + 2  # mmdet's get_cls_channels
        self.p, self.q, self.eps = settings.p, settings.q, settings.eps
        # integers (mmdet's are float32, whose steps pass 1 beyond 2^24 RoIs): exact counts, the same ratios
        self.register_buffer("cum_samples", torch.zeros(num_classes + 1, dtype=torch.long))

    def _split(self, class_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The class logits ``[R, C]`` and the objectness logits ``[R, 2]`` (background, object)."""
        check_logits(class_logits, self.num_logits, "SeesawLoss", "C+2")
        return class_logits[:, 1:-1], class_logits[:, [0, -1]]

    def forward(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Class loss (``seesaw_ce_loss`` on the positives) + objectness loss, each / R (``SeesawLoss.forward``)."""
        classes, objectness = self._split(class_logits)
        rois = class_logits.shape[0]
        if rois == 0:  # mmdet's bbox head skips the loss (and its counts) on no RoI
            return class_logits.sum() * 0
        self.cum_samples += torch.bincount(labels, minlength=self.num_classes + 1)
        dtype = torch.promote_types(class_logits.dtype, torch.float32)  # mmdet's force_fp32
        classes, objectness = classes.to(dtype), objectness.to(dtype)
        positive = labels > 0
        class_loss = self._class_loss(classes[positive], labels[positive] - 1)
        objectness_loss = F.cross_entropy(objectness, positive.long(), reduction="sum")
        return (class_loss + objectness_loss) / rois

    def _class_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``seesaw_ce_loss``, summed: ``logits [P, C]`` of the positive RoIs, ``targets`` their classes 0..C-1."""
        onehot = F.one_hot(targets, self.num_classes).to(logits.dtype)
        weights = torch.ones_like(logits)
        if self.p > 0:
            counts = self.cum_samples[1:].clamp(min=1).to(logits.dtype)
            # mmdet builds the [C, C] ratio matrix and takes the labels' rows: the same rows, made directly
            ratio = counts[None, :] / counts[targets][:, None]
            weights = weights * torch.where(ratio < 1, ratio.pow(self.p), 1.0)
        if self.q > 0:
            probs = F.softmax(logits.detach(), 1)
            own = probs.gather(1, targets[:, None]).clamp(min=self.eps)
            ratio = probs / own
            weights = weights * torch.where(ratio > 1, ratio.pow(self.q), 1.0)
        adjusted = logits + weights.log() * (1 - onehot)
        return F.cross_entropy(adjusted, targets, reduction="sum")

    def scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        """``get_activation``: ``[R, 1+C]``, column 0 the objectness background probability, then the class
        softmax times the object probability (rows sum to 1)."""
        classes, objectness = self._split(class_logits)
        objectness = F.softmax(objectness, -1)
        return torch.cat([objectness[:, :1], F.softmax(classes, -1) * objectness[:, 1:]], 1)
