"""The MobileNetV2-FPN body, the stages of a MobileNet body, and ImageNet weights for a backbone body.

``model.backbone_weights`` names a torchvision-format ImageNet state dict (the keys of torchvision's
``resnet50()`` / ``resnet18()`` / ``mobilenet_v2()``; the classifier's ``fc.*`` / ``classifier.*`` may be
there and are not used). :func:`load_backbone_weights` checks it against the body and loads it; the
base phase calls it once. Later phases rebuild the model from the checkpoint's model config, which keeps
``backbone_weights`` as a record (and the norm layer it implies), and load the checkpoint's weights:
the ImageNet file is never read again.

Norm layers follow torchvision: a body that starts from pretrained weights keeps their batch statistics
in ``FrozenBatchNorm2d`` (detection batches are too small to re-estimate them); ResNet bodies always do
(they start from a COCO or ImageNet checkpoint); a MobileNetV2 body trained from scratch uses
``BatchNorm2d``, as the small demo backbone does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn
from torchvision.models import mobilenet_v2
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from lst.errors import WeightsError
from lst.io import file_digest
from lst.modeling.weights import _listing, read_named_tensors

_NUM_BATCHES_TRACKED = "num_batches_tracked"


@dataclass(frozen=True)
class WeightsFormat:
    """How a torchvision ImageNet state dict names a backbone body's parameters."""

    constructor: str  # the torchvision model whose state dict the file is, for messages
    prefix: str  # what the file puts before the body's own key names
    classifier: str  # the ImageNet classifier's keys: allowed in the file, not loaded


WEIGHTS_FORMATS = {
    "resnet18_fpn": WeightsFormat("torchvision resnet18()", "", "fc."),
    "resnet50_fpn": WeightsFormat("torchvision resnet50()", "", "fc."),
    "mobilenet_v2_fpn": WeightsFormat("torchvision mobilenet_v2()", "features.", "classifier."),
}


# what the body keys of a torchvision ImageNet file start with, to name another backbone's file
_FAMILIES = (("features.", "the keys of a MobileNet (features.*)"), ("layer1.", "the keys of a ResNet (layer1-4.*)"))


def _downsamples(block: nn.Module) -> bool:
    return bool(getattr(block, "_is_cn", False))  # torchvision sets _is_cn on MobileNet blocks of stride 2


def downsampling_stages(blocks: list[nn.Module]) -> list[nn.Module]:
    """Consecutive blocks grouped into stages, a new stage at each block of stride 2.

    For MobileNetV2's ``features`` this gives 5 stages ending at strides 2, 4, 8, 16 and 32: the stem
    (features 0-1), then the C2-C5 stages, as ResNet's stem and layer1-4 (maskrcnn-benchmark's 1-5).
    """
    stages: list[list[nn.Module]] = [[]]
    for block in blocks:
        if _downsamples(block) and stages[-1]:
            stages.append([])
        stages[-1].append(block)
    return [nn.ModuleList(stage) for stage in stages]


def is_mobilenet_body(blocks: list[nn.Module]) -> bool:
    return any(_downsamples(block) for block in blocks)


def mobilenet_v2_fpn(fpn_channels: int, pretrained: bool) -> BackboneWithFPN:
    """torchvision's MobileNetV2 ``features`` with an FPN over the ends of its stride-4..32 stages.

    Unlike torchvision's ``mobilenet_backbone`` (for MobileNetV2 its two levels are both at stride 32),
    four levels at strides 4, 8, 16 and 32 (24, 32, 96 and 1280 channels) plus max-pool: the levels
    lst's RoI heads and 5 anchor sizes expect, as from a ResNet.
    """
    features = mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d).features
    ends = [index - 1 for index, block in enumerate(features) if _downsamples(block)] + [len(features) - 1]
    ends = ends[-4:]
    return BackboneWithFPN(
        features,
        return_layers={str(index): str(level) for level, index in enumerate(ends)},
        in_channels_list=[features[index].out_channels for index in ends],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    state, _ = read_named_tensors(path, "backbone weights file", "state dict")
    return dict(state)


def _match(state: dict[str, Tensor], body_state: dict[str, Tensor], fmt: WeightsFormat, path: Path) -> dict:
    """The file's tensors under the body's key names; every problem in one line."""
    matched: dict[str, Tensor] = {}
    unexpected = []
    for key, value in state.items():
        name = key.removeprefix(fmt.prefix) if key.startswith(fmt.prefix) else None
        if key.startswith(fmt.classifier):
            continue
        if name in body_state:
            matched[name] = value
        elif not (name and name.endswith("." + _NUM_BATCHES_TRACKED)):  # frozen norm layers keep no counter
            unexpected.append(key)
    missing = [fmt.prefix + k for k in body_state if k not in matched and not k.endswith("." + _NUM_BATCHES_TRACKED)]
    wrong = [
        f"{fmt.prefix + key!r}: {tuple(value.shape)} in the file, {tuple(body_state[key].shape)} in the model"
        for key, value in matched.items()
        if value.shape != body_state[key].shape
    ]
    problems = []
    if not matched:
        family = next((name for marker, name in _FAMILIES if any(key.startswith(marker) for key in state)), None)
        problems.append(f"none of its keys is a body key: {family or 'a file for another backbone?'}")
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unknown keys {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): " + "; ".join(wrong[:8]))
    if problems:
        raise WeightsError(f"{path}: not {fmt.constructor} ImageNet weights: " + " | ".join(problems))
    return matched


def load_backbone_weights(body: nn.Module, backbone: str, path: str | os.PathLike) -> str:
    """Load the ImageNet state dict at ``path`` into the backbone ``body``; return the file's sha256.

    Raises :class:`WeightsError` naming the file for a file that is not a weights-only state dict, has
    keys missing, unknown or of the wrong shape, or belongs to another backbone; nothing is copied then.
    """
    path = Path(path)
    fmt = WEIGHTS_FORMATS.get(backbone)
    if fmt is None:
        raise WeightsError(
            f"{path}: model.backbone={backbone} takes no pretrained weights (model.backbone_weights is for "
            f"{', '.join(WEIGHTS_FORMATS)})"
        )
    matched = _match(_read_state_dict(path), body.state_dict(), fmt, path)
    body.load_state_dict(matched, strict=False)  # only num_batches_tracked counters may be left out
    return file_digest(path)
