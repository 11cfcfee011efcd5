"""RoI classification losses of the long-tail literature, each with its test-time scores and its state.

Every loss is an ``nn.Module`` built as ``Loss(num_classes, image_counts, num_images, **settings)`` and called
``loss(class_logits, labels)`` -> scalar: ``class_logits`` ``[R, 1+C]`` (column 0 background, columns 1..C the
classes, as torchvision; Seesaw ``[R, C+2]``, see lst.losses.seesaw), ``labels`` ``[R]`` in 0..C, 0 the
background; ``image_counts[j]`` the training images holding class j+1, ``num_images`` the training images.
``loss.scores(class_logits)`` gives ``[R, 1+C]`` (column 0 background, the rest the detection scores), as the
loss's authors score at test time. State across iterations (EQLv2's gradient statistics, Seesaw's counts,
the federated loss's generator) is in ``state_dict()`` and comes back with ``load_state_dict()``.
Settings a loss does not get take its authors' defaults; one out of range raises ConfigError naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

from lst.conf.typed import settings_from
from lst.errors import ConfigError
from lst.losses import settings as loss_settings

# name: (module of lst.losses, class, its settings (lst.losses.settings), logits beyond 1+C)
LOSSES = {
    "cross_entropy": ("cross_entropy", "SoftmaxCrossEntropy", loss_settings.CrossEntropySettings, 0),
    "eql": ("eql", "EqualizationLoss", loss_settings.EQLSettings, 0),
    "eqlv2": ("eqlv2", "EqualizationLossV2", loss_settings.EQLv2Settings, 0),
    "seesaw": ("seesaw", "SeesawLoss", loss_settings.SeesawSettings, 1),  # the objectness "object" logit
    "federated": ("federated", "FederatedLoss", loss_settings.FederatedSettings, 0),
}


def classification_loss(
    name: str, num_classes: int, image_counts: Sequence[int], num_images: int, **settings: Any
) -> nn.Module:
    """The loss ``name`` (a key of LOSSES) for ``num_classes`` classes, the authors' defaults for the settings
    not given."""
    if name not in LOSSES:
        raise ValueError(f"{name!r} is not a loss ({', '.join(LOSSES)})")
    module, cls, _, _ = LOSSES[name]
    return getattr(importlib.import_module(f"lst.losses.{module}"), cls)(
        num_classes, image_counts, num_images, **settings
    )


def checked_settings(name: Any, settings: Mapping[str, Any] | None, key: str) -> Any:
    """The settings dataclass of loss ``name`` from ``settings`` (config key ``key``: ``<key>.name`` and
    ``<key>.settings``), checked: an unknown loss or setting, or a value out of range, is a ConfigError."""
    if name not in LOSSES:
        raise ConfigError(f"{key}.name: {name!r} is not a loss of lst.losses ({', '.join(LOSSES)})")
    return settings_from(LOSSES[name][2], settings, f"{key}.settings")


def extra_logits(name: str) -> int:
    """The class logits loss ``name`` needs beyond background + classes (Seesaw's objectness: 1)."""
    return LOSSES[name][3]


def check_logits(class_logits: torch.Tensor, expected: int, loss: str, text: str) -> None:
    """``[R, expected]`` logits, else a ValueError saying how many the model must output."""
    if class_logits.dim() != 2 or class_logits.shape[1] != expected:
        raise ValueError(f"{loss} takes class_logits [R, {text}] = [R, {expected}], got {list(class_logits.shape)}")
