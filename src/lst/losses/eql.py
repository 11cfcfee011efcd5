"""Equalization Loss (Tan et al., CVPR 2020): sigmoid BCE that drops the rare classes' negative terms on
foreground RoIs.

Follows the authors' release, tztztztztz/eql.detectron2 ``projects/EQL/eql/fast_rcnn.py``
(``EQLFastRCNNOutputs.eql_loss``, ``exclude_func``, ``threshold_func``, ``predict_probs``), with the class
frequencies of ``roi_heads.py`` / ``lvis_v0_5_categories.py`` (``image_count / images``) and the default
``cfg.py`` (``LAMBDA = 0.00177``), in lst's layout: ``class_logits [R, 1+C]``, labels 0..C with 0 the background.

- The authors' classifier has C outputs, no background logit (``EQLFastRCNNOutputLayers.cls_score`` is
  ``Linear(_, num_classes)``); their one-hot target has C+1 columns, the background (label C, last) dropped.
  lst's model outputs 1+C logits, so column 0 (the background) takes no part in the loss and gets no gradient.
- Target: one-hot of the label over the C classes, all zeros for a background RoI.
- Weight: ``w_j = 1 - E(r) T(f_j) (1 - y_j)``, ``E(r)`` 1 for a foreground RoI and 0 for a background one,
  ``T(f_j)`` 1 where class j's frequency ``f_j = image_count_j / num_images`` is below ``lambda_``.
- Loss: ``sum(BCE * w) / R``.
- Test-time scores: the sigmoid of the class logits; column 0 is 0, the authors' dummy background
  probability (``predict_probs``), which lst's RoI heads leave out as they do.
- ``lambda_``: 0.00177 for LVIS v0.5 (the authors' default); 0.0011 for LVIS v1 (the authors' EQL config for v1
  in tztztztztz/eqlv2).
- The authors' classifier bias starts at ``-log((1 - 0.001) / 0.001)`` (``prior_prob``); that belongs to the
  model, not to this loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lst.conf.typed import settings_from
from lst.losses import check_logits
from lst.losses.bce import weighted_bce_sum
from lst.losses.settings import EQLSettings


class EqualizationLoss(nn.Module):
    """EQL on ``[R, 1+C]`` logits (column 0 background, not used). Stateless: the rare-class mask comes from
    ``image_counts`` and ``num_images``; ``lambda_`` is 0.00177 for LVIS v0.5 (default), 0.0011 for LVIS v1."""

    rare: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        image_counts: Sequence[int],
        num_images: int,
        *,
        lambda_: float = 0.00177,
    ):
        super().__init__()
        settings = settings_from(EQLSettings, {"lambda_": lambda_}, "eql")
        if len(image_counts) != num_classes:
            raise ValueError(f"EqualizationLoss takes {num_classes} image counts, got {len(image_counts)}")
        self.num_classes = num_classes
        self.num_logits = num_classes + 1
        self.lambda_ = settings.lambda_
        # max(., 1): no images means frequency 0 (every class rare), not NaN
        frequency = torch.tensor(list(image_counts), dtype=torch.float64) / max(num_images, 1)
        # T_lambda (threshold_func); not persistent: it is rebuilt from the constructor's arguments
        self.register_buffer("rare", (frequency < self.lambda_).float(), persistent=False)

    def forward(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``eql_loss``: ``sum(BCE(z, y) * (1 - E T (1 - y))) / R`` over the C class columns."""
        check_logits(class_logits, self.num_logits, "EqualizationLoss", "1+C")
        if class_logits.shape[0] == 0:  # the authors' would divide by 0; no RoI, no loss (graph kept)
            return class_logits.sum() * 0
        # float32 at least: the weights and the sum stay exact under autocast
        logits = class_logits[:, 1:].to(torch.promote_types(class_logits.dtype, torch.float32))
        rows = torch.where(labels > 0)[0]
        columns = labels[rows] - 1  # one-hot over the classes; a background row all zeros
        # w = 1 - E(r) T(f) (1 - y): the rare classes' negatives dropped on foreground RoIs (exclude_func)
        weight = logits.new_ones(logits.shape)
        weight[rows] -= self.rare.to(logits.dtype)[None, :]
        weight[rows, columns] = 1
        return weighted_bce_sum(logits, weight, rows, columns) / logits.shape[0]

    def scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        """``predict_probs``: sigmoid of the class logits, ``[R, 1+C]``; column 0 zeros (the authors' dummy
        background probability, there last)."""
        probs = torch.sigmoid(class_logits[:, 1:])
        return torch.cat([probs.new_zeros(probs.shape[0], 1), probs], 1)
