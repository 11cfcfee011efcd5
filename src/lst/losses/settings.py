"""The settings of each loss of lst.losses, with their authors' defaults and ranges: torch-free, so that a
method's loss is checked when the config loads (lst.conf.typed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lst.conf.typed import above, at_least, between


@dataclass(frozen=True)
class CrossEntropySettings:
    """torchvision's softmax cross-entropy has none."""


@dataclass(frozen=True)
class EQLSettings:
    """The authors' default (``cfg.py``, ``MODEL.ROI_HEADS.LAMBDA``)."""

    lambda_: float = field(default=0.00177, metadata=between(0, 1))


@dataclass(frozen=True)
class EQLv2Settings:
    """The authors' defaults (``EQLv2.__init__``)."""

    gamma: float = field(default=12.0, metadata=at_least(0))
    mu: float = field(default=0.8, metadata=at_least(0))  # f's centre on the ratio pos/neg, itself >= 0
    alpha: float = field(default=4.0, metadata=at_least(0))


@dataclass(frozen=True)
class SeesawSettings:
    """mmdet's defaults (``SeesawLoss.__init__``)."""

    p: float = field(default=0.8, metadata=at_least(0))
    q: float = field(default=2.0, metadata=at_least(0))
    eps: float = field(default=0.01, metadata=above(0))


@dataclass(frozen=True)
class FederatedSettings:
    """detectron2's defaults (``defaults.py``); ``seed`` is lst's, for the module's own generator (None: a
    method's loss takes the run's phase seed, lst.data.sampling.phase_seed; the module alone, 0)."""

    num_classes_sampled: int = field(default=50, metadata=at_least(1))
    freq_weight_power: float = field(default=0.5, metadata=at_least(0))
    seed: int | None = field(default=None, metadata=at_least(0))
