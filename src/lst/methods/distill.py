"""distill: fine-tuning plus L2 distillation of the previous model's cosine scores (docs/method.md section 5).

The teacher's scores on the new-class boxes are precomputed by extract_logits (``teacher_logits``); the
student matches them on the same boxes and flips (lst.methods.logit_distillation), weighted by
``distill.weight`` and normalised per ``distill.group_images`` images.
"""

from __future__ import annotations

import logging

from lst.methods.finetune import Finetune
from lst.methods.method import TEACHER_LOGITS, PhaseTraining

log = logging.getLogger(__name__)


class Distill(Finetune):
    """Fine-tuning with logit distillation from precomputed teacher scores."""

    def phase_inputs(self) -> tuple[str, ...]:
        return (*super().phase_inputs(), TEACHER_LOGITS)

    def teacher_terms(self, phase: PhaseTraining):  # noqa: ANN201 - a DistillationLoss (torch)
        from lst.data import tables
        from lst.methods.logit_distillation import DistillationLoss

        path = phase.inputs[TEACHER_LOGITS]
        logits = tables.read_arrow(path, tables.logits_schema(phase.num_old + 1))
        log.info("distilling from %s (%d boxes x flips)", path, logits.num_rows)
        distill = self.config["distill"]
        return DistillationLoss(logits, distill["weight"], distill["group_images"])
