"""COCO weights: loading both sources, maskrcnn-benchmark conversion, trimming, loading into a model.

All state dicts are generated (real key names and shapes, random values); nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import Payload, cheap_state
from torch import nn

from lst.errors import WeightsError
from lst.modeling.checkpoint import load_checkpoint
from lst.modeling.weights import (
    CLASS_SPECIFIC_PREFIXES,
    MASKRCNN_BENCHMARK_PROVENANCE,
    TORCHVISION_PROVENANCE,
    load_coco_checkpoint,
    load_trimmed_into,
    torchvision_layout,
    torchvision_to_maskrcnn_benchmark_key,
    trim_checkpoint,
    trim_state_dict,
)

torch.set_num_threads(1)

CLASS_KEYS_TV = [
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
]


def _maskrcnn(num_classes: int) -> nn.Module:
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes
    )


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    """torchvision's COCO layout (91 classes), random values; BatchNorm buffers randomised too."""
    torch.manual_seed(0)
    state = _maskrcnn(91).state_dict()
    generator = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var")):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
    return dict(state)


@pytest.fixture(scope="module")
def tv_state_81(tv_state) -> dict[str, torch.Tensor]:
    """The same layout with maskrcnn-benchmark's 81 classes and no num_batches_tracked (FrozenBatchNorm)."""
    generator = torch.Generator().manual_seed(2)
    shapes = torchvision_layout(81)
    state = {key: value for key, value in tv_state.items() if not key.endswith("num_batches_tracked")}
    for key in CLASS_KEYS_TV:
        state[key] = torch.randn(shapes[key], generator=generator)
    return state


@pytest.fixture(scope="module")
def tv_file(tv_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    torch.save(tv_state, path)
    return path


def _to_maskrcnn_benchmark(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = {}
    for key, value in state.items():
        if key == "backbone.body.conv1.weight":
            value = value.flip(1).contiguous()  # maskrcnn-benchmark's stem takes BGR
        model["module." + torchvision_to_maskrcnn_benchmark_key(key)] = value
    for level in range(5):
        model[f"module.rpn.anchor_generator.cell_anchors.{level}"] = torch.randn(3, 4)
    return model


@pytest.fixture(scope="module")
def mb_file(tv_state_81, tmp_path_factory):
    path = tmp_path_factory.mktemp("mb") / "e2e_mask_rcnn_R_50_FPN_1x.pth"
    checkpoint = {
        "model": _to_maskrcnn_benchmark(tv_state_81),
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.zeros(3)}},
            "param_groups": [{"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "params": [0, 1]}],
        },
        "scheduler": {
            "milestones": (60000, 80000),
            "gamma": 0.1,
            "warmup_factor": 1 / 3,
            "warmup_iters": 500,
            "warmup_method": "linear",
            "base_lrs": [0.02, 0.02],
            "last_epoch": 89999,
        },
        "iteration": 90000,
    }
    torch.save(checkpoint, path)
    return path


# ------------------------------------------------------------------------------------------------------
# layout and names
# ------------------------------------------------------------------------------------------------------


def test_layout_matches_torchvision(tv_state):
    expected = {k: tuple(v.shape) for k, v in tv_state.items() if not k.endswith("num_batches_tracked")}
    assert torchvision_layout(91) == expected


def test_maskrcnn_benchmark_names_match_its_modeling_code():
    # Names as built by maskrcnn_benchmark/modeling (backbone/resnet.py, backbone/fpn.py, rpn/rpn.py,
    # roi_heads/box_head/*, roi_heads/mask_head/*).
    pairs = {
        "backbone.body.conv1.weight": "backbone.body.stem.conv1.weight",
        "backbone.body.bn1.running_var": "backbone.body.stem.bn1.running_var",
        "backbone.body.layer1.0.downsample.1.weight": "backbone.body.layer1.0.downsample.1.weight",
        "backbone.body.layer3.5.conv2.weight": "backbone.body.layer3.5.conv2.weight",
        "backbone.fpn.inner_blocks.0.0.weight": "backbone.fpn.fpn_inner1.weight",
        "backbone.fpn.inner_blocks.3.0.bias": "backbone.fpn.fpn_inner4.bias",
        "backbone.fpn.layer_blocks.0.0.weight": "backbone.fpn.fpn_layer1.weight",
        "backbone.fpn.layer_blocks.3.0.bias": "backbone.fpn.fpn_layer4.bias",
        "rpn.head.conv.0.0.weight": "rpn.head.conv.weight",
        "rpn.head.cls_logits.bias": "rpn.head.cls_logits.bias",
        "rpn.head.bbox_pred.weight": "rpn.head.bbox_pred.weight",
        "roi_heads.box_head.fc6.weight": "roi_heads.box.feature_extractor.fc6.weight",
        "roi_heads.box_head.fc7.bias": "roi_heads.box.feature_extractor.fc7.bias",
        "roi_heads.box_predictor.cls_score.weight": "roi_heads.box.predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.bias": "roi_heads.box.predictor.bbox_pred.bias",
        "roi_heads.mask_head.0.0.weight": "roi_heads.mask.feature_extractor.mask_fcn1.weight",
        "roi_heads.mask_head.3.0.bias": "roi_heads.mask.feature_extractor.mask_fcn4.bias",
        "roi_heads.mask_predictor.conv5_mask.weight": "roi_heads.mask.predictor.conv5_mask.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias": "roi_heads.mask.predictor.mask_fcn_logits.bias",
    }
    for tv_key, mb_key in pairs.items():
        assert torchvision_to_maskrcnn_benchmark_key(tv_key) == mb_key
    names = [torchvision_to_maskrcnn_benchmark_key(key) for key in torchvision_layout()]
    assert len(set(names)) == len(names)


# ------------------------------------------------------------------------------------------------------
# torchvision source
# ------------------------------------------------------------------------------------------------------


def test_torchvision_load_and_trim(tv_state, tv_file):
    state, meta = load_coco_checkpoint(tv_file)
    assert meta == TORCHVISION_PROVENANCE
    assert list(state) == list(tv_state)
    for key, value in tv_state.items():
        assert torch.equal(state[key], value), key

    trimmed, dropped = trim_state_dict(state)
    assert dropped == CLASS_KEYS_TV
    assert set(trimmed) == set(tv_state) - set(CLASS_KEYS_TV)
    assert not any(key.startswith(CLASS_SPECIFIC_PREFIXES) for key in trimmed)
    assert "roi_heads.mask_predictor.conv5_mask.weight" in trimmed
    for key, value in trimmed.items():
        assert value.dtype == tv_state[key].dtype and torch.equal(value, tv_state[key]), key


def test_trim_checkpoint_torchvision(tv_state, tv_file, tmp_path):
    dst = tmp_path / "trimmed.pth"
    summary = trim_checkpoint(tv_file, dst)
    assert summary["source"] == "torchvision"
    assert summary["num_kept"] == len(tv_state) - len(CLASS_KEYS_TV)
    assert summary["dropped"] == CLASS_KEYS_TV

    checkpoint = load_checkpoint(dst)
    assert set(checkpoint) == {"model", "category_ids", "iteration", "config", "meta"}
    assert checkpoint["category_ids"] == [] and checkpoint["iteration"] == 0 and checkpoint["config"] == {}
    assert checkpoint["meta"] == TORCHVISION_PROVENANCE
    assert set(checkpoint["model"]) == set(tv_state) - set(CLASS_KEYS_TV)
    for key, value in checkpoint["model"].items():
        assert torch.equal(value, tv_state[key]), key
    # a trimmed file loads again (class-specific layers are optional) with its metadata
    state, meta = load_coco_checkpoint(dst)
    assert meta == TORCHVISION_PROVENANCE and len(state) == summary["num_kept"]
    dst.unlink()


def test_legacy_torchvision_names_are_upgraded(tmp_path):
    layout = torchvision_layout(91)
    state = cheap_state(layout)
    legacy = {}
    for key, value in state.items():
        old = key
        for block in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                old = old.replace(f"backbone.fpn.{block}.{i}.0.", f"backbone.fpn.{block}.{i}.")
        old = old.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for i in range(4):
            old = old.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        legacy[old] = value
    assert "roi_heads.mask_head.mask_fcn4.bias" in legacy and "rpn.head.conv.weight" in legacy
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    loaded, meta = load_coco_checkpoint(path)
    assert meta["source"] == "torchvision"
    assert set(loaded) == set(layout)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# ------------------------------------------------------------------------------------------------------
# maskrcnn-benchmark source
# ------------------------------------------------------------------------------------------------------


def test_maskrcnn_benchmark_round_trip(tv_state_81, mb_file, tmp_path):
    state, meta = load_coco_checkpoint(mb_file)
    assert meta == {
        "source": "maskrcnn_benchmark",
        "image_mean": [122.7717 / 255, 115.9465 / 255, 102.9801 / 255],
        "image_std": [1 / 255] * 3,
        "stride_in_1x1": True,
    }
    assert set(state) == set(tv_state_81)  # anchors dropped, no optimizer/scheduler
    for key, value in tv_state_81.items():
        assert torch.equal(state[key], value), key
    raw = torch.load(mb_file, weights_only=True)["model"]["module.backbone.body.stem.conv1.weight"]
    assert torch.equal(state["backbone.body.conv1.weight"][:, 0], raw[:, 2])  # R <- B-slot of BGR
    assert torch.equal(state["backbone.body.conv1.weight"][:, 2], raw[:, 0])

    dst = tmp_path / "trimmed_mb.pth"
    summary = trim_checkpoint(mb_file, dst)
    assert summary["source"] == "maskrcnn_benchmark" and summary["dropped"] == CLASS_KEYS_TV
    checkpoint = load_checkpoint(dst)
    assert checkpoint["meta"] == MASKRCNN_BENCHMARK_PROVENANCE
    assert "optimizer" not in checkpoint and "scheduler" not in checkpoint
    assert torch.equal(checkpoint["model"]["backbone.body.conv1.weight"], tv_state_81["backbone.body.conv1.weight"])
    # reloading the converted, trimmed file keeps the maskrcnn-benchmark normalisation (and no second flip)
    again, meta_again = load_coco_checkpoint(dst)
    assert meta_again == MASKRCNN_BENCHMARK_PROVENANCE
    assert torch.equal(again["backbone.body.conv1.weight"], tv_state_81["backbone.body.conv1.weight"])
    dst.unlink()


def test_maskrcnn_benchmark_without_module_prefix(tmp_path):
    mb = {
        torchvision_to_maskrcnn_benchmark_key(key): value for key, value in cheap_state(torchvision_layout(81)).items()
    }
    path = tmp_path / "plain_mb.pth"
    torch.save(mb, path)
    state, meta = load_coco_checkpoint(path)
    assert meta["source"] == "maskrcnn_benchmark"
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (81, 1024)


# ------------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------------


def _save(tmp_path, obj, name="bad.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_unknown_keys(tmp_path):
    state = cheap_state(torchvision_layout())
    state.update({f"backbone.body.layer3.{i}.conv1.weight": torch.zeros(256, 1024, 1, 1) for i in (6, 7, 8)})
    path = _save(tmp_path, state)
    with pytest.raises(WeightsError, match=r"unknown keys .*layer3\.6\.conv1.*\(3 in all\)") as info:
        load_coco_checkpoint(path)
    assert str(path) in str(info.value)

    mb = {"module." + torchvision_to_maskrcnn_benchmark_key(k): v for k, v in cheap_state(torchvision_layout()).items()}
    mb["module.roi_heads.keypoint.feature_extractor.conv_fcn1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"unknown maskrcnn-benchmark .*keypoint"):
        load_coco_checkpoint(_save(tmp_path, {"model": mb, "iteration": 5}))


def test_missing_keys(tmp_path):
    state = cheap_state(torchvision_layout())
    del state["backbone.body.layer2.1.bn2.running_var"]
    del state["roi_heads.mask_predictor.conv5_mask.weight"]
    path = _save(tmp_path, state)
    with pytest.raises(WeightsError, match=r"missing required keys .*layer2\.1\.bn2\.running_var.*conv5_mask"):
        load_coco_checkpoint(path)


def test_wrong_shape(tmp_path):
    state = cheap_state(torchvision_layout())
    state["rpn.head.cls_logits.weight"] = torch.zeros(15, 256, 1, 1)
    with pytest.raises(WeightsError, match=r"rpn\.head\.cls_logits\.weight.*\(15, 256, 1, 1\).*\(3, 256, 1, 1\)"):
        load_coco_checkpoint(_save(tmp_path, state))


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(WeightsError, match="not a checkpoint") as info:
        load_coco_checkpoint(text)
    assert str(text) in str(info.value)
    with pytest.raises(WeightsError, match="does not exist"):
        load_coco_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match="top-level object is a list"):
        load_coco_checkpoint(_save(tmp_path, [torch.zeros(1)]))
    with pytest.raises(WeightsError, match="unknown layout"):
        load_coco_checkpoint(_save(tmp_path, {"weights": {"a": torch.zeros(1)}, "epoch": 3}))
    with pytest.raises(WeightsError, match="unknown layout: keys are neither"):
        load_coco_checkpoint(_save(tmp_path, {"encoder.layer.0.weight": torch.zeros(1)}))
    with pytest.raises(WeightsError, match="not named tensors"):
        load_coco_checkpoint(_save(tmp_path, {"model": {"backbone.body.conv1.weight": [1.0]}}))


def test_pickle_with_objects_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = _save(tmp_path, {"model": {"backbone.body.conv1.weight": torch.zeros(1)}, "extra": Payload(marker)})
    with pytest.raises(WeightsError, match=r"objects other than tensors.*Unsupported global") as info:
        load_coco_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------
# loading into a model
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trimmed(tv_state):
    return trim_state_dict(tv_state)[0]


@pytest.fixture(scope="module")
def model5():
    torch.manual_seed(3)
    return _maskrcnn(5)


def test_load_trimmed_into_fresh_model(trimmed, model5):
    fresh_predictor = {k: v.clone() for k, v in model5.state_dict().items() if k.startswith(CLASS_SPECIFIC_PREFIXES)}
    load_trimmed_into(model5, trimmed)
    state = model5.state_dict()
    for key, value in state.items():
        if key.startswith(CLASS_SPECIFIC_PREFIXES):
            assert torch.equal(value, fresh_predictor[key]), key  # left as initialised
        else:
            assert torch.equal(value, trimmed[key]), key
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (5, 1024)


def test_load_trimmed_into_cosine_predictor_and_frozen_counters(trimmed, model5):
    class CosinePredictor(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_score = nn.Linear(1024, 5, bias=False)
            self.scale = nn.Parameter(torch.tensor(20.0))
            self.bbox_pred = nn.Linear(1024, 20)

    model5.roi_heads.box_predictor = CosinePredictor()
    without_counters = {k: v for k, v in trimmed.items() if not k.endswith("num_batches_tracked")}
    load_trimmed_into(model5, {"model": without_counters, "meta": {}})  # a checkpoint dict works too
    assert torch.equal(
        model5.state_dict()["roi_heads.mask_predictor.conv5_mask.weight"],
        trimmed["roi_heads.mask_predictor.conv5_mask.weight"],
    )


def test_load_trimmed_into_errors(trimmed, model5):
    before = model5.state_dict()["roi_heads.box_head.fc6.weight"].clone()

    bad_shape = dict(trimmed)
    bad_shape["roi_heads.box_head.fc7.weight"] = torch.zeros(512, 1024)
    bad_shape["roi_heads.box_head.fc6.weight"] = torch.ones(1024, 12544)
    with pytest.raises(
        WeightsError,
        match=r"'roi_heads\.box_head\.fc7\.weight': checkpoint \(512, 1024\) vs model \(1024, 1024\)",
    ):
        load_trimmed_into(model5, bad_shape)
    assert torch.equal(model5.state_dict()["roi_heads.box_head.fc6.weight"], before)  # nothing copied

    missing = {k: v for k, v in trimmed.items() if not k.startswith("roi_heads.mask_predictor.conv5_mask.")}
    with pytest.raises(WeightsError, match=r"missing from the checkpoint .*conv5_mask\.weight"):
        load_trimmed_into(model5, missing)
    missing = {k: v for k, v in trimmed.items() if k != "backbone.fpn.layer_blocks.2.0.bias"}
    with pytest.raises(WeightsError, match=r"missing from the checkpoint .*layer_blocks\.2\.0\.bias"):
        load_trimmed_into(model5, missing)

    extra = dict(trimmed, **{"roi_heads.box_head.fc8.weight": torch.zeros(3)})
    with pytest.raises(WeightsError, match=r"unexpected keys .*fc8"):
        load_trimmed_into(model5, extra)

    untrimmed = dict(trimmed, **{"roi_heads.box_predictor.cls_score.weight": torch.zeros(91, 1024)})
    with pytest.raises(WeightsError, match="not trimmed"):
        load_trimmed_into(model5, untrimmed)
