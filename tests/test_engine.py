import logging

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL
from PIL import Image

from lst.data.dataset import DetectionData, SampleStream
from lst.data.sampling import uniform_stream
from lst.engine.distributed import state_digest
from lst.engine.train_loop import HookBase, TrainerBase
from lst.engine.trainer import lr_factor, train
from lst.errors import TrainingError
from lst.modeling.mask_rcnn import build_model
from lst.modeling.roi_heads import set_classification

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

    def crash_at_5(forward, calls=[0]):  # noqa: B006 - counts calls
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt  # stands in for a kill after the checkpoint at iteration 3
        return {}

    with pytest.raises(KeyboardInterrupt):
        _train(stream, tmp_path / "resumed", crash_at_5)
    with caplog.at_level(logging.INFO, logger="lst.engine.trainer"):
        resumed = _train(stream, tmp_path / "resumed")
    assert "at iteration 3" in caplog.text
    assert resumed["iteration"] == straight["iteration"] == 6
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


class CountingLoss(torch.nn.Module):
    """A stateful classification loss: cross-entropy weighted by the foreground RoIs seen so far (a buffer)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, class_logits, labels):
        self.seen += (labels > 0).sum()
        return torch.nn.functional.cross_entropy(class_logits, labels) * (1 + self.seen / 10)

    def scores(self, class_logits):
        return class_logits.softmax(-1)


def _train_with_state(stream, work_dir, extra_losses=None, keep_state=True):
    """6 iterations with a CountingLoss, its state saved and restored (``keep_state``) or not."""
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    loss = CountingLoss()
    set_classification(model.roi_heads, loss)
    state = {"classification": loss} if keep_state else None
    checkpoint = train(model, stream, CFG, work_dir, {"category_ids": [2, 1]}, seed=0, extra_losses=extra_losses,
                       method_state=state)  # fmt: skip
    return checkpoint, float(loss.seen)


def test_resume_restores_the_method_state(tiny_data, tmp_path):
    """A method's loss state (EQLv2's statistics, Seesaw's counts) resumes with the weights: bit-identical."""
    _, stream = tiny_data
    straight, seen = _train_with_state(stream, tmp_path / "straight")

    def crash_at_5(forward, calls=[0]):  # noqa: B006 - counts calls
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return {}

    for keep_state, equal in [(True, True), (False, False)]:
        work_dir = tmp_path / f"resumed_{keep_state}"
        with pytest.raises(KeyboardInterrupt):
            _train_with_state(stream, work_dir, crash_at_5, keep_state)
        crash_at_5.__defaults__[0][0] = 0
        resumed, resumed_seen = _train_with_state(stream, work_dir, keep_state=keep_state)
        same = all(torch.equal(value, resumed["model"][key]) for key, value in straight["model"].items())
        assert same is equal and (resumed_seen == seen) is equal
    assert "method_state" in torch.load(tmp_path / "resumed_True" / "last.pt", weights_only=True)


def test_non_finite_loss_stops_with_iteration_and_terms(tiny_data, tmp_path):
    _, stream = tiny_data

    def explode_at_5(forward, calls=[0]):  # noqa: B006
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
    with caplog.at_level(logging.INFO, logger="lst.engine.trainer"):
        _train(other, tmp_path)
    assert "another configuration" in caplog.text
    assert "resuming" not in caplog.text


def test_freezing_counts_resnet_stages_as_maskrcnn_benchmark():
    from lst.engine.trainer import freeze_backbone_stages

    model = build_model(dict(SMALL, backbone="resnet18_fpn", fpn_channels=16), num_classes=3)
    body = model.backbone.body
    freeze_backbone_stages(model, 2)  # the released code's base phase: stem and res2 (layer1)
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

    def record(forward):  # runs inside the training forward
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
    """fp16 on a CPU: one line (the device is known at run time); an unknown mode: lst.conf.schema.Amp's error
    (a config's value is refused when it is composed, tests/test_bad_input.py)."""
    _, stream = tiny_data
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        _run(stream, tmp_path, amp="fp16")
    with pytest.raises(ValueError, match="'fp32' is not a valid Amp"):
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

    from lst.engine.trainer import KeyedSampler

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
    from lst.engine.trainer import rank_samples

    samples = uniform_stream(np.arange(1, 9), 3, 2, world_size=2)
    mine = rank_samples(samples, 1, 2)
    assert len(mine) == 6 and list(mine["position"]) == list(range(6))
    with pytest.raises(TrainingError, match="split for 2 training process"):
        rank_samples(samples, 0, 1)


def test_bf16_inference_gives_float32_columns(tiny_data):
    from lst.evaluation.inference import detect

    data, _ = tiny_data
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    detections = detect(model, data, batch_size=2, amp="bf16", channels_last=True)
    assert len(detections) > 0
    assert detections["score"].dtype == np.float32 and detections["x"].dtype == np.float32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        detect(model, data, batch_size=2, amp="fp16")


def test_biases_train_at_twice_the_lr_without_decay_as_maskrcnn_benchmark():
    from lst.engine.trainer import make_optimizer

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


def _parameters(model):
    return state_digest({name: parameter.detach() for name, parameter in model.named_parameters()})


class Points(HookBase):
    """Records each hook point and its iteration."""

    def __init__(self):
        self.calls = []

    def before_train(self):
        self.calls.append(("before_train", self.trainer.start_iter))

    def before_step(self):
        self.calls.append(("before_step", self.trainer.iter))

    def before_backward(self):
        self.calls.append(("before_backward", self.trainer.iter))

    def after_step(self):
        self.calls.append(("after_step", self.trainer.iter))

    def after_train(self):
        self.calls.append(("after_train", self.trainer.iter))


class Recorder(Points):
    """Points, with the loss terms before the backward and the weights after each update."""

    def __init__(self, crash_after: int | None = None):
        super().__init__()
        self.crash_after = crash_after

    def before_backward(self):
        self.calls.append(("before_backward", self.trainer.iter, sorted(self.trainer.losses)))

    def after_step(self):
        model = self.trainer.model
        self.calls.append(("after_step", self.trainer.iter, state_digest(model.state_dict()), _parameters(model)))
        if self.trainer.iter == self.crash_after:
            raise KeyboardInterrupt


LOSSES = ["loss_box_reg", "loss_classifier", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]


def test_hook_points_in_order_and_a_resumed_run_starts_after_its_checkpoint(tiny_data, tmp_path):
    _, stream = tiny_data
    hook = Recorder(crash_after=4)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(build_model(SMALL, num_classes=3), stream, CFG, tmp_path, {"category_ids": [2, 1]}, seed=0, hooks=[hook])
    expected = [("before_train", 0)]
    for i in range(1, 5):
        expected += [("before_step", i), ("before_backward", i, LOSSES), ("after_step", i)]
    without_weights = [call[:2] if call[0] == "after_step" else call for call in hook.calls]
    assert without_weights == expected  # no after_train: the run did not complete
    weights = {call[1]: call[2] for call in hook.calls if call[0] == "after_step"}

    resumed = Recorder()
    torch.manual_seed(0)
    checkpoint = train(build_model(SMALL, num_classes=3), stream, CFG, tmp_path, {"category_ids": [2, 1]}, seed=0,
                       hooks=[resumed])  # fmt: skip
    assert resumed.calls[0] == ("before_train", 3)  # the checkpoint of iteration 3
    assert [call[1] for call in resumed.calls if call[0] == "after_step"] == [4, 5, 6]
    assert resumed.calls[-1] == ("after_train", 6)
    assert [call for call in resumed.calls if call[0] == "after_step"][0][2] == weights[4]  # the same update 4
    assert state_digest(checkpoint["model"]) == resumed.calls[-2][2]


def test_a_non_finite_loss_stops_before_the_update(tiny_data, tmp_path):
    _, stream = tiny_data
    hook = Recorder()

    def explode_at_5(forward, calls=[0]):  # noqa: B006
        calls[0] += 1
        return {"loss_bad": torch.tensor(float("nan") if calls[0] == 5 else 0.0)}

    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    with pytest.raises(TrainingError, match="iteration 5"):
        train(model, stream, CFG, tmp_path, {"category_ids": [2, 1]}, seed=0, extra_losses=explode_at_5, hooks=[hook])
    after_4 = [call[3] for call in hook.calls if call[0] == "after_step"][-1]
    assert hook.calls[-1] == ("before_step", 5)  # the check comes first: the caller's hooks saw no loss of 5
    assert _parameters(model) == after_4  # no NaN gradient was applied (nor sent to other ranks)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 3


def _scalars(work_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(work_dir / "tensorboard"))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_curves_of_a_resumed_run_are_the_uninterrupted_ones(tiny_data, tmp_path):
    _, stream = tiny_data
    _train(stream, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        torch.manual_seed(0)
        train(build_model(SMALL, num_classes=3), stream, CFG, tmp_path / "resumed", {"category_ids": [2, 1]}, seed=0,
              hooks=[Recorder(crash_after=5)])  # fmt: skip
    _train(stream, tmp_path / "resumed")  # from the checkpoint of iteration 3: points 4 and 5 are written again
    straight = _scalars(tmp_path / "straight")
    assert {"loss/total", "loss/loss_classifier", "lr"} <= set(straight)
    assert all([step for step, _ in points] == list(range(1, 7)) for points in straight.values())  # log_period 1
    assert _scalars(tmp_path / "resumed") == straight


def test_periodic_evaluation_is_a_training_hook(tiny_data, tmp_path):
    from lst.evaluation.periodic_eval import PeriodicEvaluation, read_curve

    data, stream = tiny_data
    images = data.images.reset_index(drop=True).assign(neg_category_ids=[[]] * 4, not_exhaustive_category_ids=[[]] * 4)
    seen = pd.DataFrame({"category_id": [2, 1], "name": ["b", "a"], "frequency": ["r", "r"], "phase": [0, 0],
                         "instance_count": [2, 2]})  # fmt: skip
    val = DetectionData(images, data.annotations.assign(area=400.0), seen, data.image_root, with_masks=False)
    eval_cfg = {"score_thresh": 0.0, "max_dets": 100, "batch_size": 2, "amp": "off"}
    hook = PeriodicEvaluation(val, seen, 0, 3, eval_cfg, tmp_path / "curve.parquet", tmp_path / "tensorboard")
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    train(model, stream, CFG, tmp_path, {"category_ids": [2, 1]}, seed=0, hooks=[hook])
    curve = read_curve(tmp_path / "curve.parquet")
    assert sorted(set(curve["iteration"])) == [3, 6]
    final = curve[curve["iteration"] == 6].drop(columns="iteration")
    expected = hook.evaluate(model)  # the trained model's metrics
    pd.testing.assert_frame_equal(
        final.sort_values(["iou_type", "metric"]).reset_index(drop=True),
        expected.sort_values(["iou_type", "metric"]).reset_index(drop=True),
    )
    assert {"eval/segm/AP", "eval/bbox/AP", "loss/total"} <= set(_scalars(tmp_path))


class Counting(TrainerBase):
    def __init__(self, fail_at=None):
        super().__init__()
        self.steps, self.fail_at = [], fail_at

    def run_step(self):
        self.before_backward()
        if self.iter == self.fail_at:
            raise RuntimeError("step failed")
        self.steps.append(self.iter)


def test_the_loop_runs_the_iterations_after_the_start_and_refuses_non_hooks():
    trainer, first, second = Counting(), Points(), Points()
    trainer.register_hooks([first, second])
    trainer.train(2, 4)
    assert trainer.steps == [3, 4]
    steps = [(point, i) for i in (3, 4) for point in ("before_step", "before_backward", "after_step")]
    assert first.calls == [("before_train", 2), *steps, ("after_train", 4)] == second.calls
    failing, points = Counting(fail_at=2), Points()
    failing.register_hooks([points])
    with pytest.raises(RuntimeError, match="step failed"):
        failing.train(0, 3)
    assert failing.steps == [1] and points.calls[-1] == ("before_backward", 2)  # no after_train
    with pytest.raises(TypeError, match="not a HookBase"):
        trainer.register_hooks([lambda iteration, model: None])
