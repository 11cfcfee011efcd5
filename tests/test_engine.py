import logging

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL
from PIL import Image

from lst.dataset import DetectionData, SampleStream
from lst.engine import lr_factor, train
from lst.errors import TrainingError
from lst.model import build_model
from lst.sampling import uniform_stream

CFG = dict(
    iterations=6, batch_size=2, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="multistep",
    steps=[4], gamma=0.1, warmup_iters=2, warmup_factor=0.1, freeze_backbone_stages=1, flip_prob=0.5,
    checkpoint_period=3, log_period=1, num_workers=0, bias_lr_factor=2.0, weight_decay_bias=0.0,
)  # fmt: skip


@pytest.fixture
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in range(1, 5):
        pixels = np.full((48, 48, 3), 128, np.uint8)
        x, y = rng.integers(2, 20, size=2)
        pixels[y : y + 20, x : x + 20] = (255, 0, 0) if image_id % 2 else (0, 0, 255)
        Image.fromarray(pixels).save(tmp_path / f"{image_id}.png")
        images.append({"image_id": image_id, "width": 48, "height": 48, "file_name": f"{image_id}.png"})
        polygon = [x, y, x + 20, y, x + 20, y + 20, x, y + 20]
        annotations.append(
            {"annotation_id": image_id, "image_id": image_id, "category_id": 1 + image_id % 2, "x": x, "y": y,
             "w": 20.0, "h": 20.0, "segmentation": str([[float(v) for v in polygon]])}
        )  # fmt: skip
    categories = pd.DataFrame({"category_id": [2, 1]})
    data = DetectionData(pd.DataFrame(images), pd.DataFrame(annotations), categories, tmp_path)
    return data, SampleStream(data, uniform_stream(data.image_ids(), 6, 2, seed=0))


def _train(stream, work_dir, extra_losses=None):
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    return train(model, stream, CFG, work_dir, {"category_ids": [2, 1]}, seed=0, extra_losses=extra_losses)


def test_resume_after_interruption_gives_identical_weights(tiny_data, tmp_path, caplog):
    _, stream = tiny_data
    straight = _train(stream, tmp_path / "straight")

    def crash_at_5(model, images, targets, calls=[0]):  # noqa: B006 - counts calls
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt  # stands in for a kill after the checkpoint at iteration 3
        return {}

    with pytest.raises(KeyboardInterrupt):
        _train(stream, tmp_path / "resumed", crash_at_5)
    with caplog.at_level(logging.INFO, logger="lst.engine"):
        resumed = _train(stream, tmp_path / "resumed")
    assert "at iteration 3" in caplog.text
    assert resumed["iteration"] == straight["iteration"] == 6
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_non_finite_loss_stops_with_iteration_and_terms(tiny_data, tmp_path):
    _, stream = tiny_data

    def explode_at_5(model, images, targets, calls=[0]):  # noqa: B006
        calls[0] += 1
        return {"loss_bad": torch.tensor(float("nan") if calls[0] == 5 else 0.0)}

    with pytest.raises(TrainingError, match=r"iteration 5: the loss is not finite .*loss_bad"):
        _train(stream, tmp_path / "run", explode_at_5)
    assert (tmp_path / "run" / "last.pt").exists()  # the good checkpoint of iteration 3 is kept


def test_frozen_stages_do_not_change(tiny_data, tmp_path):
    _, stream = tiny_data
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    stem = {k: v.clone() for k, v in model.backbone.body.stem.state_dict().items()}
    train(model, stream, CFG, tmp_path, {"category_ids": [2, 1]}, seed=0)
    assert all(torch.equal(v, model.backbone.body.stem.state_dict()[k]) for k, v in stem.items())


def test_lr_schedule():
    assert lr_factor(0, CFG) == pytest.approx(0.1)
    assert lr_factor(1, CFG) == pytest.approx(0.55)
    assert lr_factor(3, CFG) == 1.0
    assert lr_factor(4, CFG) == pytest.approx(0.1)
    cosine = dict(CFG, schedule="cosine", warmup_iters=0, iterations=10)
    assert lr_factor(5, cosine) == pytest.approx(0.5)


def test_a_checkpoint_of_another_stream_is_not_resumed(tiny_data, tmp_path, caplog):
    data, stream = tiny_data
    _train(stream, tmp_path)
    other = SampleStream(data, uniform_stream(data.image_ids(), 6, 2, seed=1))
    with caplog.at_level(logging.INFO, logger="lst.engine"):
        _train(other, tmp_path)
    assert "another configuration" in caplog.text
    assert "resuming" not in caplog.text


def test_freezing_counts_resnet_stages_as_maskrcnn_benchmark():
    from lst.engine import freeze_backbone_stages

    model = build_model(dict(SMALL, backbone="resnet18_fpn", fpn_channels=16), num_classes=3)
    body = model.backbone.body
    freeze_backbone_stages(model, 2)  # the seed's base phase: stem and res2 (layer1)
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    freeze_backbone_stages(model, 5)  # the phases: the whole ResNet
    assert not any(p.requires_grad for p in body.parameters())
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())


def _run(stream, work_dir, **cfg):
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    return train(model, stream, dict(CFG, **cfg), work_dir, {"category_ids": [2, 1]}, seed=0)


def test_bf16_autocast_trains_on_cpu(tiny_data, tmp_path):
    _, stream = tiny_data
    seen = []

    def record(model, images, targets):  # runs inside the training forward
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return {}

    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    cfg = dict(CFG, amp="bf16", iterations=3)
    checkpoint = train(model, stream, cfg, tmp_path, {"category_ids": [2, 1]}, seed=0, extra_losses=record)
    assert seen == [(True, torch.bfloat16)] * 3
    # the loss stayed finite (train raises otherwise) and the weights stay float32
    assert all(v.dtype == torch.float32 for v in checkpoint["model"].values() if v.is_floating_point())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the box predictor stays float32 under autocast
        assert model.roi_heads.box_predictor(torch.randn(2, 32).bfloat16())[1].dtype == torch.float32


def test_fp16_is_refused_on_cpu_and_unknown_modes_too(tiny_data, tmp_path):
    _, stream = tiny_data
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        _run(stream, tmp_path, amp="fp16")
    with pytest.raises(TrainingError, match="'fp32' is not one of"):
        _run(stream, tmp_path, amp="fp32")
    assert not (tmp_path / "last.pt").exists()


def test_channels_last_trains_like_the_default_layout(tiny_data, tmp_path):
    _, stream = tiny_data
    default = _run(stream, tmp_path / "default", iterations=2)
    nhwc = _run(stream, tmp_path / "nhwc", iterations=2, channels_last=True)
    for key, value in default["model"].items():
        assert nhwc["model"][key].is_contiguous()  # checkpoints keep the default layout
        torch.testing.assert_close(nhwc["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_sampling_of_an_image_does_not_depend_on_its_batch():
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

    from lst.engine import KeyedSampler

    sampler = KeyedSampler(BalancedPositiveNegativeSampler(8, 0.25), "roi")
    rng = torch.Generator().manual_seed(0)
    first, second = (torch.randint(-1, 3, (200,), generator=rng) for _ in range(2))
    sampler.keys = [11, 22]
    together = sampler([first, second])
    sampler.keys = [22]
    alone = sampler([second])
    assert torch.equal(together[0][1], alone[0][0]) and torch.equal(together[1][1], alone[1][0])
    assert int(together[0][1].sum()) == 2 and int(together[1][1].sum()) == 6  # 8 per image, 25% positive
    sampler.keys = [23]
    assert not torch.equal(sampler([second])[1][0], alone[1][0])  # another key, another draw


def test_hooks_see_every_iteration_and_training_mode_comes_back(tiny_data, tmp_path):
    _, stream = tiny_data
    calls = []

    def evaluate_every_2(iteration, model):
        calls.append((iteration, model.training))
        if iteration % 2 == 0:
            model.eval()  # as a periodic evaluation would

    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    train(model, stream, CFG, tmp_path, {"category_ids": [2, 1]}, seed=0, hooks=[evaluate_every_2])
    assert calls == [(i, True) for i in range(1, 7)]


def test_a_stream_split_for_other_ranks_is_refused():
    from lst.engine import rank_samples

    samples = uniform_stream(np.arange(1, 9), 3, 2, world_size=2)
    mine = rank_samples(samples, 1, 2)
    assert len(mine) == 6 and list(mine["position"]) == list(range(6))
    with pytest.raises(TrainingError, match="split for 2 training process"):
        rank_samples(samples, 0, 1)


def test_bf16_inference_gives_float32_columns(tiny_data):
    from lst.inference import detect

    data, _ = tiny_data
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    detections = detect(model, data, batch_size=2, amp="bf16", channels_last=True)
    assert len(detections) > 0
    assert detections["score"].dtype == np.float32 and detections["x"].dtype == np.float32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        detect(model, data, batch_size=2, amp="fp16")


def test_biases_train_at_twice_the_lr_without_decay_as_maskrcnn_benchmark():
    from lst.engine import make_optimizer

    model = build_model(SMALL, num_classes=3)
    model.backbone.body.stem.requires_grad_(False)
    optimizer = make_optimizer(model, CFG)
    weights, biases = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(".bias") for p in biases["params"])
    assert not any(names[id(p)].endswith(".bias") for p in weights["params"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(weights["params"]) + len(biases["params"]) == len(trainable)  # frozen ones left out
    assert (weights["lr"], weights["weight_decay"]) == (0.01, 1e-4)
    assert (biases["lr"], biases["weight_decay"]) == (0.02, 0.0)
    same = make_optimizer(model, dict(CFG, bias_lr_factor=1.0, weight_decay_bias=None)).param_groups[1]
    assert (same["lr"], same["weight_decay"]) == (0.01, 1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, CFG))
    scheduler.step()  # the warm-up scales both groups alike
    assert optimizer.param_groups[1]["lr"] == pytest.approx(2 * optimizer.param_groups[0]["lr"])
