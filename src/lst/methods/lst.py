"""lst: Learning to Segment the Tail: balanced replay and logit distillation in every phase (the paper's method).

Setting ``meta``: the new classes' classifier rows come from the meta-module, trained episodically on the base
classes (lst.methods.meta_module), instead of N(0, 0.01) (the paper's generator; the released code never wired
it in).
"""

from __future__ import annotations

from dataclasses import dataclass

from lst.methods.distill import Distill
from lst.methods.method import META, PhaseTraining
from lst.methods.replay import Replay


@dataclass(frozen=True)
class LstSettings:
    meta: bool = False  # the new classes' rows from the meta-module


class Lst(Replay, Distill):
    """Replay's stream and Distill's teacher terms, optionally with meta-module rows."""

    Settings = LstSettings

    def phase_inputs(self) -> tuple[str, ...]:
        return (*super().phase_inputs(), *((META,) if self.settings.meta else ()))

    def initialise_new_rows(self, phase: PhaseTraining) -> None:
        if self.settings.meta:
            from lst.methods.meta_module import generate_new_rows

            generate_new_rows(phase, self.config["meta"]["per_class"], self.config["eval"]["batch_size"])
