"""COCO-trained Mask R-CNN R50-FPN weights: load, convert to torchvision names, trim, load into a model.

Two sources are accepted by :func:`load_coco_checkpoint` (always ``torch.load(..., weights_only=True)``):

* torchvision's ``maskrcnn_resnet50_fpn`` COCO state dict (e.g. ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``).
  Names from torchvision < 0.13 (``backbone.fpn.inner_blocks.0.weight``, ``rpn.head.conv.weight``,
  ``roi_heads.mask_head.mask_fcn1.weight``; the released COCO file uses them) are upgraded to the current
  names, as torchvision's own ``_load_from_state_dict`` hooks would do.
* maskrcnn-benchmark's ``e2e_mask_rcnn_R_50_FPN_1x.pth`` (``{"model": state_dict, "optimizer": ...,
  "scheduler": ..., "iteration": ...}``, keys usually prefixed ``module.``). Only ``"model"`` is used.

maskrcnn-benchmark -> torchvision names (after stripping ``module.``; ``X`` is weight/bias/running_*):

=====================================================  ==================================================
maskrcnn-benchmark                                     torchvision 0.29
=====================================================  ==================================================
backbone.body.stem.conv1.weight                        backbone.body.conv1.weight (input channels BGR->RGB)
backbone.body.stem.bn1.X                               backbone.body.bn1.X
backbone.body.layerL.B.{conv1..3,bn1..3,downsample}.X  identical
backbone.fpn.fpn_inner{i}.X  (i = 1..4)                backbone.fpn.inner_blocks.{i-1}.0.X
backbone.fpn.fpn_layer{i}.X  (i = 1..4)                backbone.fpn.layer_blocks.{i-1}.0.X
rpn.head.conv.X                                        rpn.head.conv.0.0.X
rpn.head.{cls_logits,bbox_pred}.X                      identical
rpn.anchor_generator.cell_anchors.N                    dropped (buffers; torchvision recomputes anchors)
roi_heads.box.feature_extractor.fc{6,7}.X              roi_heads.box_head.fc{6,7}.X
roi_heads.box.predictor.{cls_score,bbox_pred}.X        roi_heads.box_predictor.{cls_score,bbox_pred}.X
roi_heads.mask.feature_extractor.mask_fcn{k}.X         roi_heads.mask_head.{k-1}.0.X
roi_heads.mask.predictor.conv5_mask.X                  roi_heads.mask_predictor.conv5_mask.X
roi_heads.mask.predictor.mask_fcn_logits.X             roi_heads.mask_predictor.mask_fcn_logits.X
=====================================================  ==================================================

Differences of maskrcnn-benchmark weights that the names do not carry, returned in the metadata so that the
model builder can match them (see :data:`MASKRCNN_BENCHMARK_PROVENANCE`):

* The C2-derived backbone expects BGR images in 0-255 minus the pixel mean [102.9801, 115.9465, 122.7717]
  with std 1. The stem conv is converted to RGB input here; the builder must use ``image_mean`` /
  ``image_std`` from the metadata (in torchvision's 0-1 units), not the ImageNet statistics.
* ``STRIDE_IN_1X1=True``: the stride of the first bottleneck of layer2-4 is in the 1x1 ``conv1``, not the
  3x3 ``conv2`` as in torchvision. Weight shapes are identical either way; only the builder can fix this.

Smaller differences that are recorded here only (not corrected; fine-tuning absorbs them): maskrcnn-benchmark
boxes and anchors use the legacy "+1" pixel convention (``TO_REMOVE = 1``) where torchvision uses none; its
``FrozenBatchNorm2d`` computes ``running_var.rsqrt()`` without eps during training while torchvision's adds
eps=1e-5 (C2-derived buffers have running_var = 1, so a relative 5e-6); its box/mask predictors use 81
contiguous COCO classes where torchvision uses 91 ids, which is irrelevant once trimmed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lst.errors import WeightsError
from lst.modeling.checkpoint import save_checkpoint

SOURCE_TORCHVISION = "torchvision"
SOURCE_MASKRCNN_BENCHMARK = "maskrcnn_benchmark"

TORCHVISION_PROVENANCE: dict[str, Any] = {
    "source": SOURCE_TORCHVISION,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "stride_in_1x1": False,
}
# maskrcnn-benchmark's PIXEL_MEAN is BGR [102.9801, 115.9465, 122.7717] on 0-255 images with std 1;
# expressed for RGB images in 0-1 (torchvision's GeneralizedRCNNTransform): (x - m/255) / (1/255) = 255x - m.
MASKRCNN_BENCHMARK_PROVENANCE: dict[str, Any] = {
    "source": SOURCE_MASKRCNN_BENCHMARK,
    "image_mean": [122.7717 / 255, 115.9465 / 255, 102.9801 / 255],
    "image_std": [1 / 255] * 3,
    "stride_in_1x1": True,
}
_PROVENANCE_BY_SOURCE = {
    SOURCE_TORCHVISION: TORCHVISION_PROVENANCE,
    SOURCE_MASKRCNN_BENCHMARK: MASKRCNN_BENCHMARK_PROVENANCE,
}

# Layers whose shapes depend on the number of classes: removed by trimming.
CLASS_SPECIFIC_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")
# Modules a LST model builds anew (e.g. a cosine classifier); their parameters need not be in a checkpoint,
# except the class-agnostic mask deconvolution, which must load.
NEW_MODULE_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")
REQUIRED_PREDICTOR_PREFIX = "roi_heads.mask_predictor.conv5_mask."

_NUM_BATCHES_TRACKED = "num_batches_tracked"
_STEM_CONV = "backbone.body.conv1.weight"
_SHOW = 8  # how many keys an error message lists


# --------------------------------------------------------------------------------------------------------
# The torchvision R50-FPN Mask R-CNN layout
# --------------------------------------------------------------------------------------------------------


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")}


def _conv(prefix: str, out_ch: int, in_ch: int, kernel: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.weight": (out_ch, in_ch, kernel, kernel)}
    if bias:
        shapes[f"{prefix}.bias"] = (out_ch,)
    return shapes


def torchvision_layout(num_classes: int = 91) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ``maskrcnn_resnet50_fpn(num_classes=...)`` state dict.

    BatchNorm ``num_batches_tracked`` buffers are left out: they are optional (FrozenBatchNorm2d has none).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    shapes.update(_conv("backbone.body.conv1", 64, 3, 7, bias=False))
    shapes.update(_bn("backbone.body.bn1", 64))
    in_ch = 64
    for layer, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), start=1):
        for block in range(blocks):
            prefix = f"backbone.body.layer{layer}.{block}"
            shapes.update(_conv(f"{prefix}.conv1", planes, in_ch, 1, bias=False))
            shapes.update(_bn(f"{prefix}.bn1", planes))
            shapes.update(_conv(f"{prefix}.conv2", planes, planes, 3, bias=False))
            shapes.update(_bn(f"{prefix}.bn2", planes))
            shapes.update(_conv(f"{prefix}.conv3", planes * 4, planes, 1, bias=False))
            shapes.update(_bn(f"{prefix}.bn3", planes * 4))
            if block == 0:
                shapes.update(_conv(f"{prefix}.downsample.0", planes * 4, in_ch, 1, bias=False))
                shapes.update(_bn(f"{prefix}.downsample.1", planes * 4))
            in_ch = planes * 4
    for i, channels in enumerate((256, 512, 1024, 2048)):
        shapes.update(_conv(f"backbone.fpn.inner_blocks.{i}.0", 256, channels, 1))
    for i in range(4):
        shapes.update(_conv(f"backbone.fpn.layer_blocks.{i}.0", 256, 256, 3))
    shapes.update(_conv("rpn.head.conv.0.0", 256, 256, 3))
    shapes.update(_conv("rpn.head.cls_logits", 3, 256, 1))
    shapes.update(_conv("rpn.head.bbox_pred", 12, 256, 1))
    shapes.update({"roi_heads.box_head.fc6.weight": (1024, 256 * 7 * 7), "roi_heads.box_head.fc6.bias": (1024,)})
    shapes.update({"roi_heads.box_head.fc7.weight": (1024, 1024), "roi_heads.box_head.fc7.bias": (1024,)})
    shapes.update(
        {
            "roi_heads.box_predictor.cls_score.weight": (num_classes, 1024),
            "roi_heads.box_predictor.cls_score.bias": (num_classes,),
            "roi_heads.box_predictor.bbox_pred.weight": (num_classes * 4, 1024),
            "roi_heads.box_predictor.bbox_pred.bias": (num_classes * 4,),
        }
    )
    for i in range(4):
        shapes.update(_conv(f"roi_heads.mask_head.{i}.0", 256, 256, 3))
    shapes.update(
        {
            "roi_heads.mask_predictor.conv5_mask.weight": (256, 256, 2, 2),
            "roi_heads.mask_predictor.conv5_mask.bias": (256,),
        }
    )
    shapes.update(_conv("roi_heads.mask_predictor.mask_fcn_logits", num_classes, 256, 1))
    return shapes


_LAYOUT_NAMES = tuple(torchvision_layout())
_LAYOUT_KEYS = frozenset(_LAYOUT_NAMES)
_BN_PREFIXES = frozenset(key[: -len("running_mean")] for key in _LAYOUT_NAMES if key.endswith(".running_mean"))
_OPTIONAL_KEYS = frozenset(prefix + _NUM_BATCHES_TRACKED for prefix in _BN_PREFIXES)


def _is_class_specific(key: str) -> bool:
    return key.startswith(CLASS_SPECIFIC_PREFIXES)


# --------------------------------------------------------------------------------------------------------
# Name mappings
# --------------------------------------------------------------------------------------------------------

_TV_TO_MB_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^backbone\.body\.(conv1|bn1)\.", r"backbone.body.stem.\1."),
        (r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.", "backbone.fpn.fpn_inner{}."),
        (r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.", "backbone.fpn.fpn_layer{}."),
        (r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
        (r"^roi_heads\.box_head\.", "roi_heads.box.feature_extractor."),
        (r"^roi_heads\.box_predictor\.", "roi_heads.box.predictor."),
        (r"^roi_heads\.mask_head\.(\d)\.0\.", "roi_heads.mask.feature_extractor.mask_fcn{}."),
        (r"^roi_heads\.mask_predictor\.", "roi_heads.mask.predictor."),
    )
)


def torchvision_to_maskrcnn_benchmark_key(key: str) -> str:
    """The maskrcnn-benchmark name (without ``module.``) of a torchvision R50-FPN Mask R-CNN key."""
    for pattern, replacement in _TV_TO_MB_RULES:
        match = pattern.match(key)
        if match is None:
            continue
        if "{}" in replacement:  # 0-based torchvision index -> 1-based maskrcnn-benchmark index
            new_prefix = replacement.format(int(match.group(1)) + 1)
        else:
            new_prefix = match.expand(replacement)
        return new_prefix + key[match.end() :]
    return key  # ResNet stages layer1-4 and rpn.head.{cls_logits,bbox_pred} share their names


_MB_TO_TV: dict[str, str] = {
    torchvision_to_maskrcnn_benchmark_key(key): key for key in (*_LAYOUT_NAMES, *sorted(_OPTIONAL_KEYS))
}
_MB_DROPPED = re.compile(r"^rpn\.anchor_generator\.cell_anchors\.\d+$")

# torchvision < 0.13 names (before Conv2dNormActivation), as upgraded by torchvision's version hooks.
_TV_LEGACY_RULES: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d)\.(weight|bias)$"), r"\1.0.\2"),
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (
        re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)$"),
        lambda m: f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}",
    ),
)


def maskrcnn_benchmark_to_torchvision(
    state_dict: Mapping[str, Tensor], origin: str = "state dict"
) -> dict[str, Tensor]:
    """Rename a maskrcnn-benchmark R50-FPN state dict to torchvision names; the stem conv becomes RGB.

    ``module.`` prefixes are stripped and anchor buffers dropped; any other unknown key is an error.
    """
    converted: dict[str, Tensor] = {}
    unknown: list[str] = []
    for raw_key, value in state_dict.items():
        key = raw_key.removeprefix("module.")
        if _MB_DROPPED.match(key):
            continue
        new_key = _MB_TO_TV.get(key)
        if new_key is None:
            unknown.append(raw_key)
            continue
        if new_key in converted:
            raise WeightsError(f"{origin}: two keys map to {new_key!r} (duplicate with and without 'module.'?)")
        converted[new_key] = value
    if unknown:
        raise WeightsError(f"{origin}: unknown maskrcnn-benchmark R-50-FPN Mask R-CNN keys {_listing(unknown)}")
    stem = converted.get(_STEM_CONV)
    if stem is not None:
        if stem.dim() != 4 or stem.shape[1] != 3:
            raise WeightsError(f"{origin}: stem conv {_STEM_CONV!r} has shape {tuple(stem.shape)}, expected 3 inputs")
        converted[_STEM_CONV] = stem.flip(1).contiguous()  # input channels BGR -> RGB
    return converted


def _upgrade_torchvision_names(state_dict: Mapping[str, Tensor], origin: str) -> dict[str, Tensor]:
    upgraded: dict[str, Tensor] = {}
    for raw_key, value in state_dict.items():
        key = raw_key.removeprefix("module.")
        for pattern, replacement in _TV_LEGACY_RULES:
            new_key, count = pattern.subn(replacement, key)
            if count:
                key = new_key
                break
        if key in upgraded:
            raise WeightsError(f"{origin}: two keys map to {key!r} (old and new torchvision names mixed?)")
        upgraded[key] = value
    return upgraded


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------


def _listing(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(repr(key) for key in keys[:_SHOW])
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else f" ({len(keys)} in all)"
    return f"[{shown}{more}]"


_MB_MARKERS = (
    "backbone.body.stem.",
    "backbone.fpn.fpn_",
    "rpn.anchor_generator.",
    "roi_heads.box.",
    "roi_heads.mask.",
)
_TV_MARKERS = (
    "backbone.body.conv1.",
    "backbone.fpn.inner_blocks.",
    "roi_heads.box_head.",
    "roi_heads.mask_head.",
)


def _detect_source(keys: Iterable[str]) -> str | None:
    stripped = [key.removeprefix("module.") for key in keys]
    mb = any(key.startswith(_MB_MARKERS) for key in stripped)
    tv = any(key.startswith(_TV_MARKERS) for key in stripped)
    if mb == tv:  # neither, or a mixture
        return None
    return SOURCE_MASKRCNN_BENCHMARK if mb else SOURCE_TORCHVISION


def _num_classes(state_dict: Mapping[str, Tensor]) -> int:
    for key, per_class in (
        ("roi_heads.box_predictor.cls_score.weight", 1),
        ("roi_heads.mask_predictor.mask_fcn_logits.weight", 1),
        ("roi_heads.box_predictor.bbox_pred.weight", 4),
    ):
        value = state_dict.get(key)
        if value is not None and value.dim() > 0:
            return max(int(value.shape[0]) // per_class, 1)
    return 91


def validate_torchvision_state_dict(state_dict: Mapping[str, Tensor], origin: str = "state dict") -> None:
    """Check a torchvision R50-FPN Mask R-CNN state dict (its class-specific layers are optional).

    Raises :class:`WeightsError` for unknown keys, missing keys, wrong shapes or inconsistent class counts.
    """
    unknown = [key for key in state_dict if key not in _LAYOUT_KEYS and key not in _OPTIONAL_KEYS]
    if unknown:
        raise WeightsError(f"{origin}: unknown keys for torchvision maskrcnn_resnet50_fpn {_listing(unknown)}")
    missing = [key for key in _LAYOUT_NAMES if key not in state_dict and not _is_class_specific(key)]
    if missing:
        raise WeightsError(f"{origin}: missing required keys {_listing(missing)}")
    expected = torchvision_layout(_num_classes(state_dict))
    wrong = [
        f"{key!r}: {tuple(state_dict[key].shape)} in the checkpoint, expected {expected[key]}"
        for key in _LAYOUT_NAMES
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]
    ]
    if wrong:
        raise WeightsError(f"{origin}: tensors with wrong shapes ({len(wrong)}): " + "; ".join(wrong[:_SHOW]))


def _unpack(obj: Any, origin: str) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """The state dict inside a loaded checkpoint, and the container's stored provenance (its ``meta``, if any)."""
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{origin}: not a checkpoint (top-level object is a {type(obj).__name__}, not a dict)")
    if not obj:
        raise WeightsError(f"{origin}: not a checkpoint (empty dict)")
    for container_key in ("model", "state_dict"):
        if container_key in obj:
            state = obj[container_key]
            if not isinstance(state, Mapping):
                raise WeightsError(
                    f"{origin}: unknown layout ({container_key!r} holds a {type(state).__name__}, not a state dict)"
                )
            provenance = obj.get("meta")
            return state, provenance if isinstance(provenance, Mapping) else None
    if all(isinstance(value, Tensor) for value in obj.values()):
        return obj, None
    raise WeightsError(
        f"{origin}: unknown layout: neither a state dict of tensors nor a dict with 'model' or 'state_dict'; "
        f"top-level keys {_listing(map(str, obj))}"
    )


def read_named_tensors(
    path: Path, file_kind: str, content: str
) -> tuple[Mapping[str, Tensor], Mapping[str, Any] | None]:
    """The named tensors of a torch file and its stored metadata, loaded with ``weights_only=True``;
    every problem one ``WeightsError`` line naming ``path`` (``file_kind``, ``content``: its words)."""
    if not path.is_file():
        raise WeightsError(f"{path}: {file_kind} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for non-checkpoints and unsafe pickles
        raise WeightsError(
            f"{path}: not a {content}, or it holds objects other than tensors and builtins "
            f"(torch.load with weights_only=True failed: {_describe_load_error(error)})"
        ) from error
    state, stored_provenance = _unpack(obj, str(path))
    not_tensors = [
        str(key) for key, value in state.items() if not isinstance(key, str) or not isinstance(value, Tensor)
    ]
    if not_tensors:
        raise WeightsError(f"{path}: state dict entries that are not named tensors {_listing(not_tensors)}")
    return state, stored_provenance


def _describe_load_error(error: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.strip().split("\n\n")[0]
    text = " ".join(text.split())
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(error).__name__}: {text}"


def load_coco_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load COCO Mask R-CNN R50-FPN weights as a torchvision-named state dict plus metadata.

    The metadata is a copy of :data:`TORCHVISION_PROVENANCE` or :data:`MASKRCNN_BENCHMARK_PROVENANCE` and says how the
    model must normalise its input (``image_mean``/``image_std`` for 0-1 RGB images) and where the
    bottleneck stride goes (``stride_in_1x1``). A file written by :func:`trim_checkpoint` keeps the
    metadata it was written with. Nothing is unpickled except tensors and builtins (``weights_only=True``).
    """
    path = Path(path)
    origin = str(path)
    state, stored_provenance = read_named_tensors(path, "weights file", "checkpoint")

    source = _detect_source(state)
    if source is None:
        raise WeightsError(
            f"{origin}: unknown layout: keys are neither torchvision nor maskrcnn-benchmark "
            f"Mask R-CNN R50-FPN names; first keys {_listing(list(state)[:_SHOW])}"
        )
    if source == SOURCE_MASKRCNN_BENCHMARK:
        converted = maskrcnn_benchmark_to_torchvision(state, origin)
        provenance = dict(MASKRCNN_BENCHMARK_PROVENANCE)
    else:
        converted = _upgrade_torchvision_names(state, origin)
        provenance = dict(TORCHVISION_PROVENANCE)
        if stored_provenance is not None and "source" in stored_provenance:  # a file written by trim_checkpoint
            stored_source = stored_provenance["source"]
            if stored_source not in _PROVENANCE_BY_SOURCE:
                raise WeightsError(f"{origin}: stored provenance (meta) names an unknown source {stored_source!r}")
            provenance = dict(_PROVENANCE_BY_SOURCE[stored_source])
    validate_torchvision_state_dict(converted, origin)
    provenance = {key: list(value) if isinstance(value, list) else value for key, value in provenance.items()}
    return converted, provenance


# --------------------------------------------------------------------------------------------------------
# Trimming
# --------------------------------------------------------------------------------------------------------


def trim_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Remove the class-specific layers; return the remaining entries (same tensors) and the dropped keys."""
    kept = {key: value for key, value in state_dict.items() if not _is_class_specific(key)}
    dropped = [key for key in state_dict if _is_class_specific(key)]
    return kept, dropped


def trim_checkpoint(src_path: str | os.PathLike, dst_path: str | os.PathLike) -> dict[str, Any]:
    """Load COCO weights, trim them and write an ``lst`` checkpoint (atomically) to ``dst_path``.

    Optimizer and scheduler state of the source are never carried over. Returns a summary:
    ``{"source", "num_kept", "dropped", "path"}``.
    """
    state, provenance = load_coco_checkpoint(src_path)
    trimmed, dropped = trim_state_dict(state)
    checkpoint = {"model": trimmed, "category_ids": [], "iteration": 0, "config": {}, "meta": provenance}
    save_checkpoint(checkpoint, dst_path)
    return {"source": provenance["source"], "num_kept": len(trimmed), "dropped": dropped, "path": str(dst_path)}


# --------------------------------------------------------------------------------------------------------
# Loading a trimmed state dict into a model
# --------------------------------------------------------------------------------------------------------


def _may_be_missing(key: str) -> bool:
    if key.endswith("." + _NUM_BATCHES_TRACKED):
        return True  # BatchNorm bookkeeping; checkpoints trained with FrozenBatchNorm2d have none
    if key.startswith(REQUIRED_PREDICTOR_PREFIX):
        return False
    return key.startswith(CLASS_SPECIFIC_PREFIXES + NEW_MODULE_PREFIXES)


def _norm_running_mean(counter_key: str) -> str:
    return counter_key[: -len(_NUM_BATCHES_TRACKED)] + "running_mean"


def load_trimmed_into(model: nn.Module, checkpoint_state: Mapping[str, Any]) -> None:
    """Load a trimmed torchvision-named state dict into a Mask R-CNN whose predictors differ.

    ``checkpoint_state`` is a state dict, or a checkpoint dict whose ``"model"`` is one. Everything the
    model has must come from the checkpoint except parameters under :data:`NEW_MODULE_PREFIXES` (the
    model's new box predictor and mask logits; ``roi_heads.mask_predictor.conv5_mask`` must load) and
    BatchNorm ``num_batches_tracked`` counters. Unexpected keys, class-specific keys, missing keys and shape
    mismatches raise :class:`WeightsError` before anything is copied into the model.
    """
    if isinstance(checkpoint_state.get("model"), Mapping):
        checkpoint_state = checkpoint_state["model"]
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    model_state = model.state_dict()

    class_keys = [key for key in checkpoint_state if _is_class_specific(key)]
    if class_keys:
        raise WeightsError(f"checkpoint is not trimmed: class-specific keys {_listing(class_keys)}")
    state: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in checkpoint_state.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        if key in model_state:
            state[key] = value
        elif key.endswith("." + _NUM_BATCHES_TRACKED) and _norm_running_mean(key) in model_state:
            continue  # the model's norm layer keeps no counter (FrozenBatchNorm2d)
        else:
            unexpected.append(key)
    missing = [key for key in model_state if key not in state and not _may_be_missing(key)]
    wrong = [
        f"{key!r}: checkpoint {tuple(value.shape)} vs model {tuple(model_state[key].shape)}"
        for key, value in state.items()
        if tuple(value.shape) != tuple(model_state[key].shape)
    ]
    problems = []
    if unexpected:
        problems.append(f"unexpected keys (not in the model) {_listing(unexpected)}")
    if missing:
        problems.append(f"model keys missing from the checkpoint {_listing(missing)}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): " + "; ".join(wrong[:_SHOW]))
    if problems:
        raise WeightsError("cannot load the trimmed checkpoint into the model: " + " | ".join(problems))

    result = model.load_state_dict(state, strict=False)
    leftover = [key for key in result.missing_keys if not _may_be_missing(key)] + list(result.unexpected_keys)
    if leftover:  # cannot happen after the checks above unless a module renames keys while loading
        raise WeightsError(f"checkpoint keys not loaded by the model {_listing(leftover)}")
