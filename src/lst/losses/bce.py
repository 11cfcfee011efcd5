"""Weighted sigmoid BCE against one-hot targets, summed: the core of EQL and EQLv2, in one pass each way.

``sum_{r,j} w[r,j] BCE(x[r,j], y[r,j])`` with ``y`` 1 at ``(rows[i], columns[i])`` and 0 elsewhere equals
``sum w * softplus(x) - sum_i w[rows[i], columns[i]] x[rows[i], columns[i]]``, and its gradient is
``w * sigmoid(x) - w * y``. Written as one autograd function it needs no ``[R, C]`` target and saves only the
logits and the weights for backward (``F.binary_cross_entropy_with_logits`` with a weight saves those and the
target, and spends passes on them), which puts these losses within about 3x of cross-entropy at LVIS size
(benchmarks/losses.py). Same value and gradient as ``binary_cross_entropy_with_logits(..., reduction="sum")``.
"""

from __future__ import annotations

import torch


class _WeightedBCESum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, weight, rows, columns):  # noqa: ANN001, ANN205 - torch.autograd.Function's signature
        ctx.save_for_backward(logits, weight, rows, columns)
        ctx.mark_non_differentiable(weight)
        softplus = torch.logaddexp(logits, logits.new_zeros(()))  # log(1 + e^x), stable for any x
        positives = (weight[rows, columns] * logits[rows, columns]).sum()
        return torch.dot(weight.reshape(-1), softplus.reshape(-1)) - positives

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        logits, weight, rows, columns = ctx.saved_tensors
        grad_logits = torch.sigmoid(logits).mul_(weight)
        grad_logits[rows, columns] -= weight[rows, columns]
        return grad_logits.mul_(grad), None, None, None


def weighted_bce_sum(
    logits: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
) -> torch.Tensor:
    """``sum(weight * BCE(logits, y))`` with ``y`` the one-hot ``[R, K]`` target that is 1 exactly at
    ``(rows[i], columns[i])`` (each position at most once); ``weight`` gets no gradient."""
    return _WeightedBCESum.apply(logits, weight.detach(), rows, columns)
