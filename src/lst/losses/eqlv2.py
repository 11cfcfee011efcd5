"""Equalization Loss v2 (Tan et al., CVPR 2021): sigmoid BCE with per-class weights from accumulated gradients.

Follows the authors' release, tztztztztz/eqlv2 ``mmdet/models/losses/eqlv2.py`` (``EQLv2.forward``,
``get_weight``, ``collect_grad``, ``get_activation``, ``get_channel_num``), in lst's layout: ``class_logits``
``[R, 1+C]`` with the background output in column 0 (the authors' is the last), labels 0..C with 0 the
background. The model outputs C+1 logits, as for cross-entropy.

- One sigmoid output per class and one for the background; a RoI's target is 1 on its label's column (the
  background column for a background RoI) and 0 elsewhere.
- Weights per column: class j has ``neg_w = f(pos_grad_j / neg_grad_j)`` with ``f(x) = 1 / (1 + exp(-gamma
  (x - mu)))`` and ``pos_w = 1 + alpha (1 - neg_w)``; the background column has 1 and 1. Before the first
  call there are no statistics and every weight is 1 (the authors' ``_pos_grad is None`` case).
- Loss: ``sum(BCE * weight) / R`` (the authors ignore ``avg_factor``; ``loss_weight`` 1).
- After the loss, the gradient magnitudes ``|sigmoid(z) - target|`` times the weights are added to the
  classes' positive and negative statistics, summed over the ranks when torch.distributed is initialised.
- Test-time scores: sigmoid; the class scores times ``1 - background score``, the background column its sigmoid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from lst.conf.typed import settings_from
from lst.losses import check_logits
from lst.losses.bce import weighted_bce_sum
from lst.losses.settings import EQLv2Settings

RATIO_EPS = 1e-10  # the authors' guard in pos_grad / (neg_grad + eps)


class EqualizationLossV2(nn.Module):
    """EQLv2 on ``[R, 1+C]`` logits (column 0 background); state: the buffers ``pos_grad``, ``neg_grad``
    (``[C]``, the authors' ``_pos_grad``, ``_neg_grad``) and ``calls`` (0 before the first call). The class
    counts are not used; they are accepted for the common signature of lst.losses."""

    pos_grad: torch.Tensor
    neg_grad: torch.Tensor
    calls: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        image_counts: Sequence[int] = (),
        num_images: int = 0,
        *,
        gamma: float = 12.0,
        mu: float = 0.8,
        alpha: float = 4.0,
    ):
        super().__init__()
        settings = settings_from(EQLv2Settings, {"gamma": gamma, "mu": mu, "alpha": alpha}, "eqlv2")
        self.num_classes = num_classes
        self.num_logits = num_classes + 1  # the authors' get_channel_num
        self.gamma, self.mu, self.alpha = settings.gamma, settings.mu, settings.alpha
        self.register_buffer("pos_grad", torch.zeros(num_classes))
        self.register_buffer("neg_grad", torch.zeros(num_classes))
        # the authors tell "no statistics yet" by _pos_grad being None; a count survives the state dict
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The positive and negative weights ``[1+C]`` of the next call (``get_weight``), column 0 background."""
        mapped = torch.sigmoid(self.gamma * (self.pos_grad / (self.neg_grad + RATIO_EPS) - self.mu))
        ones = torch.ones_like(mapped)
        # torch.where rather than an `if` on calls: no device sync
        neg = torch.cat([ones[:1], torch.where(self.calls > 0, mapped, ones)])
        pos = 1 + self.alpha * (1 - neg)
        return pos, neg

    def forward(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of ``EQLv2.forward``; then the statistics take this call's gradients (``collect_grad``)."""
        check_logits(class_logits, self.num_logits, "EqualizationLossV2", "C+1")
        if class_logits.shape[0] == 0:  # mmdet's bbox head skips the loss (and its statistics) on no RoI
            return class_logits.sum() * 0
        logits = class_logits.to(torch.promote_types(class_logits.dtype, torch.float32))  # mmdet's force_fp32
        rows = torch.arange(len(labels), device=labels.device)
        pos_w, neg_w = self.weights()
        weight = neg_w.to(logits.dtype).expand_as(logits).clone()  # target * pos_w + (1 - target) * neg_w
        weight[rows, labels] = pos_w.to(logits.dtype)[labels]
        loss = weighted_bce_sum(logits, weight, rows, labels) / logits.shape[0]
        self._collect(logits.detach(), labels, weight)
        return loss

    @torch.no_grad()
    def _collect(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> None:
        """``collect_grad``: |d BCE / d logit| times the weights, summed per class over the RoIs and the ranks
        (positive: the RoIs of the class; negative: the others); the background column is left out."""
        rows = torch.arange(len(labels), device=labels.device)
        grad = torch.sigmoid(logits).mul_(weight)  # |sigmoid - y| w: sigmoid w off the target, (1 - sigmoid) w on it
        grad[rows, labels] = weight[rows, labels] - grad[rows, labels]
        positive = torch.zeros_like(self.pos_grad, dtype=grad.dtype)
        on_class = labels > 0
        positive.index_add_(0, labels[on_class] - 1, grad[rows[on_class], labels[on_class]])
        stats = torch.stack([positive, grad.sum(0)[1:] - positive]).to(self.pos_grad.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)  # one call for the authors' two: a sum either way
        self.pos_grad += stats[0]
        self.neg_grad += stats[1]
        self.calls += 1

    def scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        """``get_activation``: sigmoid, the classes times ``1 - background``; ``[R, 1+C]``, column 0 the
        background's sigmoid (rows do not sum to 1)."""
        probs = torch.sigmoid(class_logits)
        background = probs[:, :1]
        return torch.cat([background, probs[:, 1:] * (1 - background)], 1)
