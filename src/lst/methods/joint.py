"""joint: one model on every class at once (the non-incremental baseline), and the shared base model.

Trained by train_base like the base model (phase 0, method file ``base``), on as many images as the base phase
and every incremental phase together (``train_base.joint_budget``). Setting ``repeat_factor_sampling``:
detectron2's repeat-factor sampling (threshold ``rfs_threshold``) instead of every image once per epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from lst.data.sampling import repeat_factor_stream, repeat_factors, uniform_stream
from lst.methods.method import Kind, Method, StreamRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointSettings:
    repeat_factor_sampling: bool = False


class Joint(Method):
    """Every class at once, images drawn uniformly or by repeat factor."""

    kind = Kind.joint
    Settings = JointSettings

    def stream(self, request: StreamRequest) -> pd.DataFrame:
        budget = (request.iterations, request.batch_size, request.world_size)
        options = {"seed": request.seed, "flip_prob": request.flip_prob, "groups": request.groups}
        if not self.settings.repeat_factor_sampling:
            return uniform_stream(request.image_ids, *budget, **options)
        factors = repeat_factors(request.annotations, self.config["rfs_threshold"])
        log.info("repeat-factor sampling: %.2f images per epoch per image on average", factors.mean())
        return repeat_factor_stream(factors, *budget, **options)
