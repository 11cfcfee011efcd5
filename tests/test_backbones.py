"""ImageNet backbone weights (model.backbone_weights) and the MobileNetV2-FPN body."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from conftest import printed, train_base
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d
from workflow_copy import run_snakemake, workflow_copy

from lst.engine.trainer import backbone_stages, freeze_backbone_stages
from lst.io import file_digest
from lst.modeling.backbones import load_backbone_weights
from lst.modeling.mask_rcnn import build_model
from lst.modeling.weights import CLASS_SPECIFIC_PREFIXES

REPO = Path(__file__).resolve().parents[1]
MOBILENET_FILE = REPO.parent / "shared" / "data" / "weights" / "mobilenet_v2_imagenet.pth"
needs_mobilenet_file = pytest.mark.skipif(
    not MOBILENET_FILE.is_file(),
    reason="../shared/data/weights/mobilenet_v2_imagenet.pth (real ImageNet MobileNetV2 weights) is absent",
)


def model_cfg(name: str, **changes) -> dict:
    """A model config of src/lst/conf/model, cut to 64 px images."""
    cfg = yaml.safe_load((REPO / "src/lst/conf/model" / f"{name}.yaml").read_text())
    return dict(cfg, min_size=64, max_size=64, **changes)


def torchvision_file(path: Path, constructor) -> nn.Module:
    """A torchvision ImageNet-format file of a randomly initialised model (classifier included); the model."""
    torch.manual_seed(1)
    reference = constructor().eval()
    torch.save(reference.state_dict(), path)
    return reference


def body_levels(body: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(body.eval()(image).values())


@needs_mobilenet_file
def test_imagenet_mobilenet_v2_computes_what_torchvision_computes():
    """The body with the real file loaded gives torchvision mobilenet_v2's features at strides 4-32."""
    model = build_model(model_cfg("mobilenet_v2_fpn", backbone_weights=str(MOBILENET_FILE)), num_classes=3)
    digest = load_backbone_weights(model.backbone.body, "mobilenet_v2_fpn", MOBILENET_FILE)
    assert digest == "9ce67c43c92ed4e9f615cdde0f71e04d70f01d485a3eaf867b59902b3decddc4"  # the README's sha256
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    missing = reference.load_state_dict(torch.load(MOBILENET_FILE, weights_only=True), strict=False).missing_keys
    assert missing == ["classifier.1.weight", "classifier.1.bias"]
    image = torch.rand(1, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    expected, x = [], image
    with torch.no_grad():
        for index, block in enumerate(reference.features):
            x = block(x)
            if index in (3, 6, 13, 18):  # the last block of strides 4, 8, 16 and 32
                expected.append(x)
    levels = body_levels(model.backbone.body, image)
    assert [level.shape[-2:] for level in levels] == [(24, 16), (12, 8), (6, 4), (3, 2)]
    for level, reference_level in zip(levels, expected, strict=True):
        torch.testing.assert_close(level, reference_level, rtol=1e-4, atol=1e-5)


def test_resnet50_imagenet_state_dict_loads_into_the_r50_fpn_body(tmp_path):
    """torchvision resnet50() keys, fc.* included (not used): the body computes what resnet50 computes."""
    reference = torchvision_file(tmp_path / "resnet50.pth", torchvision.models.resnet50)
    model = build_model(model_cfg("resnet50_fpn", backbone_weights="r50.pth"), num_classes=3)
    load_backbone_weights(model.backbone.body, "resnet50_fpn", tmp_path / "resnet50.pth")
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(image))))
        expected = []
        for layer in (reference.layer1, reference.layer2, reference.layer3, reference.layer4):
            x = layer(x)
            expected.append(x)
    for level, reference_level in zip(body_levels(model.backbone.body, image), expected, strict=True):
        torch.testing.assert_close(level, reference_level, rtol=1e-4, atol=1e-5)


def norm_layers(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, nn.BatchNorm2d | FrozenBatchNorm2d)}


def test_mobilenet_body_freezes_batchnorm_only_when_pretrained():
    """As torchvision: pretrained -> FrozenBatchNorm2d; from scratch -> BatchNorm2d (statistics to learn)."""
    pretrained = build_model(model_cfg("mobilenet_v2_fpn", backbone_weights="any.pth"), num_classes=3)
    scratch = build_model(model_cfg("mobilenet_v2_fpn"), num_classes=3)
    assert norm_layers(pretrained.backbone.body) == {FrozenBatchNorm2d}
    assert norm_layers(scratch.backbone.body) == {nn.BatchNorm2d}
    # the ResNet body is frozen either way (torchvision's resnet_fpn_backbone default)
    assert norm_layers(build_model(model_cfg("resnet50_fpn"), num_classes=3).backbone.body) == {FrozenBatchNorm2d}


def test_mobilenet_fpn_has_the_levels_of_a_resnet_fpn():
    model = build_model(model_cfg("mobilenet_v2_fpn"), num_classes=3)
    with torch.no_grad():
        levels = model.backbone.eval()(torch.rand(1, 3, 64, 64))
    assert {name: tuple(level.shape[1:]) for name, level in levels.items()} == {
        "0": (64, 16, 16), "1": (64, 8, 8), "2": (64, 4, 4), "3": (64, 2, 2), "pool": (64, 1, 1),
    }  # fmt: skip
    assert [block[0].in_channels for block in model.backbone.fpn.inner_blocks] == [24, 32, 96, 1280]


def test_freezing_counts_mobilenet_stages_as_resnet_stages():
    """Stage 1 is the stem (stride 2), stages 2-5 end at strides 4-32, as ResNet's stem and layer1-4."""
    model = build_model(model_cfg("mobilenet_v2_fpn", backbone_weights="any.pth"), num_classes=3)
    features = model.backbone.body
    assert [len(stage) for stage in backbone_stages(features)] == [2, 2, 3, 7, 5]
    freeze_backbone_stages(model, 2)  # the released code's base phase: stem and the stride-4 stage
    frozen = [all(not p.requires_grad for p in block.parameters()) for block in features.children()]
    assert frozen == [True] * 4 + [False] * 15
    freeze_backbone_stages(model, 5)
    assert not any(p.requires_grad for p in features.parameters())
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())


# --- through the train_base step ----------------------------------------------------------------------
def body_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    prefix = "backbone.body."
    return {k.removeprefix(prefix): v for k, v in checkpoint["model"].items() if k.startswith(prefix)}


@needs_mobilenet_file
def test_base_phase_starts_from_the_file_and_later_phases_never_read_it(dataset, split_dir, tmp_path, capfd):
    weights = tmp_path / "mobilenet_v2.pth"
    shutil.copy(MOBILENET_FILE, weights)
    out = tmp_path / "base"
    assert train_base(dataset, split_dir, out, "model=mobilenet_v2_fpn", f"model.backbone_weights={weights}") == 0
    assert f"backbone body initialised from {weights}" in printed(capfd)
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["config"]["model"]["backbone_weights"] == str(weights)
    assert checkpoint["meta"]["backbone_weights"] == {"path": str(weights), "sha256": file_digest(weights)}
    # the frozen body is the file's, tensor for tensor
    imagenet = torch.load(weights, weights_only=True)
    trained = body_state(checkpoint)
    assert {"features." + key for key in trained} == {k for k in imagenet if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(value, imagenet["features." + key]) for key, value in trained.items())
    # a later phase rebuilds the architecture from the checkpoint alone, the file gone
    weights.unlink()
    rebuilt = build_model(checkpoint["config"]["model"], num_classes=len(checkpoint["category_ids"]) + 1)
    rebuilt.load_state_dict(checkpoint["model"])
    assert norm_layers(rebuilt.backbone.body) == {FrozenBatchNorm2d}


@needs_mobilenet_file
def test_another_file_at_the_same_path_is_not_resumed(dataset, split_dir, tmp_path, capfd):
    weights = tmp_path / "mobilenet_v2.pth"
    shutil.copy(MOBILENET_FILE, weights)
    out = tmp_path / "base"
    args = ("model=mobilenet_v2_fpn", f"model.backbone_weights={weights}", "train_base.checkpoint_period=1")
    assert train_base(dataset, split_dir, out, *args) == 0
    assert train_base(dataset, split_dir, out, *args) == 0
    assert f"resuming from {out / 'train' / 'last.pt'} at iteration 2" in printed(capfd)
    state = torch.load(weights, weights_only=True)
    state["features.0.0.weight"] += 0.01
    torch.save(state, weights)
    assert train_base(dataset, split_dir, out, *args) == 0
    log = printed(capfd)
    assert "was made with another configuration: training from the start" in log and "resuming" not in log


def test_a_coco_checkpoint_takes_precedence_over_backbone_weights(dataset, split_dir, tmp_path, capfd):
    """Both given: the COCO checkpoint's backbone is used, the ImageNet file is not read and not recorded."""
    changes = dict(backbone="resnet18_fpn", fpn_channels=16, representation_size=32, mask_head_channels=8,
                   mask_weight_transfer=False, mask_mlp=False)  # fmt: skip
    torch.manual_seed(2)
    coco = build_model(model_cfg("resnet50_fpn", **changes), num_classes=3).state_dict()
    coco = {k: v for k, v in coco.items() if not k.startswith(CLASS_SPECIFIC_PREFIXES)}
    torch.save({"model": coco, "meta": {}}, tmp_path / "init.pt")
    imagenet = tmp_path / "resnet18.pth"
    torchvision_file(imagenet, torchvision.models.resnet18)
    out = tmp_path / "base"
    overrides = [f"model.{key}={value}" for key, value in changes.items()]
    code = train_base(
        dataset, split_dir, out, "model=resnet50_fpn", *overrides, f"model.backbone_weights={imagenet}",
        f"paths.init={tmp_path / 'init.pt'}",
    )  # fmt: skip
    assert code == 0
    assert f"{imagenet} is not loaded: the COCO checkpoint's backbone takes precedence" in printed(capfd)
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["config"]["model"]["backbone_weights"] is None
    assert "backbone_weights" not in checkpoint["meta"]
    assert all(torch.equal(v, coco["backbone.body." + k]) for k, v in body_state(checkpoint).items())


def test_workflow_passes_backbone_weights_to_the_models_built_afresh(tmp_path):
    weights = tmp_path / "imagenet.pth"
    weights.write_bytes(b"")  # a dry run only needs the file to exist
    root = workflow_copy(tmp_path / "wf", preset="tiny", backbone_weights=str(weights))
    targets = ["results/demo/seed0/joint/phase2/model.pt", "results/demo/seed0/finetune/phase1/model.pt"]
    dry = run_snakemake(root, "-n", "-p", *targets).stdout
    commands = [line for line in dry.splitlines() if " -m lst.steps." in line]
    fresh = [line for line in commands if " -m lst.steps.train_base " in line]  # rules train_base, train_joint
    assert len(fresh) == 2 and all(f"model.backbone_weights={weights} " in line for line in fresh)
    phases = [line for line in commands if " -m lst.steps.train_phase " in line]
    assert phases and not any("backbone_weights" in line for line in phases)
