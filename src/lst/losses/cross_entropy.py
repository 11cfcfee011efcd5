"""Softmax cross-entropy over background + classes, softmax scores: torchvision's RoI classification."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxCrossEntropy(nn.Module):
    """The default RoI classification: cross-entropy over background + classes, softmax scores (torchvision's).
    The class counts are not used; they are accepted for the common signature of lst.losses."""

    def __init__(self, num_classes: int | None = None, image_counts: Sequence[int] = (), num_images: int = 0):
        super().__init__()

    def forward(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(class_logits, labels)

    def scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(class_logits, -1)
