"""The federated loss (Zhou et al., "Probabilistic two-stage detection", 2021): sigmoid BCE over the classes of
the batch and a few negative classes drawn by frequency.

Follows facebookresearch/detectron2 ``detectron2/modeling/roi_heads/fast_rcnn.py``
(``FastRCNNOutputLayers.get_fed_loss_classes``, ``sigmoid_cross_entropy_loss`` with ``use_fed_loss``,
``predict_probs``), the weights of ``detectron2/data/detection_utils.py`` (``get_fed_loss_cls_weights``) and
the defaults of ``detectron2/config/defaults.py`` (``FED_LOSS_NUM_CLASSES = 50``,
``FED_LOSS_FREQ_WEIGHT_POWER = 0.5``), in lst's layout: ``class_logits [R, 1+C]``, labels 0..C with 0 the
background (detectron2's background is the last column and label C).

- BCE on the C class columns, target the one-hot of the label (all zeros for a background RoI); the background
  column is not in the loss and gets no gradient (detectron2: ``pred_class_logits[:, :-1]``).
- Classes kept: the labels present in the batch, then classes drawn without replacement with probability
  proportional to ``image_count ** freq_weight_power`` until ``num_classes_sampled`` in all. As in detectron2,
  the background label counts among the present ones when a batch has background RoIs (so 49 classes and the
  background by default); it is never drawn nor in the loss.
- Where fewer classes can be drawn than are missing, all of them are (detectron2's ``torch.multinomial``
  would raise); a class with no training image has weight 0 (also for power 0, where detectron2 has
  ``0 ** 0 = 1``), so it is kept only when it is a label of the batch.
- Loss: ``sum(BCE * mask) / R`` over all the RoIs (detectron2's ``/ N``); no RoI gives 0 and draws nothing.
- Test-time scores: the sigmoid of the class logits; column 0 is 0, as lst's EQL (detectron2 gives the
  sigmoid of the untrained background logit, which its inference leaves out as lst's RoI heads do).
- Draws come from the module's own CPU ``torch.Generator`` seeded with ``seed`` (detectron2 uses the global
  one); its state is in ``state_dict()`` (the extra state) so that a resumed run draws the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lst.conf.typed import settings_from
from lst.losses import check_logits
from lst.losses.settings import FederatedSettings


class FederatedLoss(nn.Module):
    """Federated sigmoid loss on ``[R, 1+C]`` logits (column 0 background, not used). State: the generator of
    the draws (``get_extra_state``). ``last_classes``: the classes (1..C, sorted) of the last call's loss."""

    def __init__(
        self,
        num_classes: int,
        image_counts: Sequence[int],
        num_images: int,
        *,
        num_classes_sampled: int = 50,
        freq_weight_power: float = 0.5,
        seed: int | None = 0,
    ):
        super().__init__()
        values = {"num_classes_sampled": num_classes_sampled, "freq_weight_power": freq_weight_power, "seed": seed}
        settings = settings_from(FederatedSettings, values, "federated")
        if len(image_counts) != num_classes:
            raise ValueError(f"FederatedLoss takes {num_classes} image counts, got {len(image_counts)}")
        self.num_classes = num_classes
        self.num_logits = num_classes + 1
        self.num_classes_sampled = settings.num_classes_sampled
        self.freq_weight_power = settings.freq_weight_power
        self.seed = 0 if settings.seed is None else settings.seed
        counts = torch.tensor(list(image_counts), dtype=torch.float32)
        # get_fed_loss_cls_weights, index 0 the background (never drawn); on the CPU with the generator
        self.draw_weights = torch.cat([torch.zeros(1), torch.where(counts > 0, counts**self.freq_weight_power, 0)])
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_classes = torch.zeros(0, dtype=torch.long)

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def classes(self, labels: torch.Tensor) -> torch.Tensor:
        """``get_fed_loss_classes``: the labels present (the background 0 included) and the draws, sorted."""
        present = torch.unique(labels.cpu())  # the generator is on the CPU; detectron2's unique syncs too
        missing = self.num_classes_sampled - len(present)
        if missing > 0:
            prob = self.draw_weights.clone()
            prob[present] = 0
            draws = min(missing, int((prob > 0).sum()))
            if draws > 0:
                drawn = torch.multinomial(prob, draws, replacement=False, generator=self.generator)
                present = torch.cat([present, drawn])
        return present.sort().values

    def forward(self, class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``sigmoid_cross_entropy_loss`` with ``use_fed_loss``: ``sum(BCE(z, y) * mask) / R`` over the C classes."""
        check_logits(class_logits, self.num_logits, "FederatedLoss", "1+C")
        if class_logits.shape[0] == 0:  # detectron2 returns 0 before drawing
            self.last_classes = torch.zeros(0, dtype=torch.long)
            return class_logits.sum() * 0
        kept = self.classes(labels)
        self.last_classes = kept[kept > 0]
        # float32 at least: the sum stays exact under autocast
        logits = class_logits.to(torch.promote_types(class_logits.dtype, torch.float32))
        columns = self.last_classes.to(labels.device)  # the kept classes' columns: the others are masked out
        target = (labels[:, None] == columns[None, :]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits[:, columns], target, reduction="sum") / logits.shape[0]

    def scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        """``predict_probs`` with ``use_sigmoid_ce``: sigmoid of the class logits, ``[R, 1+C]``; column 0 zeros
        (as lst's EQL; detectron2's background sigmoid is of an untrained logit)."""
        probs = torch.sigmoid(class_logits[:, 1:])
        return torch.cat([probs.new_zeros(probs.shape[0], 1), probs], 1)
