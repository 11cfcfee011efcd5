"""The stateful RoI classification losses, EQLv2 and Seesaw, against hand-computed values and loop references.

The references work in the authors' layout (mmdetection's: the background output last for EQLv2, the classes
then [object, background] for Seesaw, background label C), so they check lst's column mapping too.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.distributed as dist

from lst.errors import ConfigError
from lst.losses import classification_loss
from lst.losses.eqlv2 import EqualizationLossV2
from lst.losses.seesaw import SeesawLoss

LN2 = math.log(2)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def random_calls(classes: int, logits: int, rois: int, calls: int, seed: int) -> list:
    """``calls`` (logits [rois, logits] float64, labels [rois] in 0..classes, about a third background)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(calls):
        z = 2 * torch.randn(rois, logits, generator=generator, dtype=torch.float64)
        labels = torch.randint(1, classes + 1, (rois,), generator=generator)
        labels[torch.rand(rois, generator=generator) < 0.35] = 0
        out.append((z, labels))
    return out


# --------------------------------------------------------------------------- EQLv2


def eqlv2_reference(calls: list, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0) -> tuple:
    """tztztztztz/eqlv2's EQLv2 with loops, in its layout (background output last, label C): the loss of each
    call and the final positive and negative gradient statistics."""
    losses, pos_grad, neg_grad = [], None, None
    for logits, labels in calls:
        z = torch.cat([logits[:, 1:], logits[:, :1]], 1).tolist()  # lst's column 0 -> the authors' last
        y = [len(z[0]) - 1 if label == 0 else label - 1 for label in labels.tolist()]
        rois, outputs = len(z), len(z[0])
        classes = outputs - 1
        if pos_grad is None:  # get_weight's first call
            pos_grad, neg_grad = [0.0] * classes, [0.0] * classes
            pos_w, neg_w = [1.0] * outputs, [1.0] * outputs
        else:
            neg_w = [sigmoid(gamma * (pos_grad[j] / (neg_grad[j] + 1e-10) - mu)) for j in range(classes)] + [1.0]
            pos_w = [1 + alpha * (1 - w) for w in neg_w]
        total = 0.0
        step_pos, step_neg = [0.0] * classes, [0.0] * classes
        for i in range(rois):
            for k in range(outputs):
                t = 1.0 if y[i] == k else 0.0
                prob = sigmoid(z[i][k])
                weight = pos_w[k] if t else neg_w[k]
                total += weight * -(t * math.log(prob) + (1 - t) * math.log(1 - prob))
                if k < classes:  # collect_grad leaves out the objectness (background) output
                    grad = abs(prob - t) * weight
                    if t:
                        step_pos[k] += grad
                    else:
                        step_neg[k] += grad
        losses.append(total / rois)
        pos_grad = [a + b for a, b in zip(pos_grad, step_pos, strict=True)]
        neg_grad = [a + b for a, b in zip(neg_grad, step_neg, strict=True)]
    return losses, pos_grad, neg_grad


def test_eqlv2_by_hand_two_calls():
    # C = 2, R = 4, labels [bg, 1, 1, 2], all logits 0: every sigmoid 0.5, every BCE ln 2, every |grad| 0.5.
    loss = EqualizationLossV2(2, [], 0)
    logits, labels = torch.zeros(4, 3), torch.tensor([0, 1, 1, 2])
    # call 1: no statistics yet, every weight 1: 4 RoIs x 3 outputs x ln 2 / 4 = 3 ln 2 = 2.0794
    assert loss(logits, labels).item() == pytest.approx(3 * LN2, rel=1e-6)
    # statistics: class 1 pos 2 x 0.5 = 1, neg 2 x 0.5 = 1; class 2 pos 1 x 0.5 = 0.5, neg 3 x 0.5 = 1.5
    assert loss.pos_grad.tolist() == pytest.approx([1.0, 0.5])
    assert loss.neg_grad.tolist() == pytest.approx([1.0, 1.5])
    # call 2: class 1 ratio 1: neg_w1 = sigmoid(12 (1 - 0.8)) = sigmoid(2.4) = 0.916827,
    #   pos_w1 = 1 + 4 (1 - 0.916827) = 1.332691; class 2 ratio 1/3: neg_w2 = sigmoid(12 (1/3 - 0.8))
    #   = sigmoid(-5.6) = 0.003684, pos_w2 = 1 + 4 (1 - 0.003684) = 4.985263; background column 1 and 1.
    neg1, neg2 = sigmoid(2.4), sigmoid(12 * (1 / 3 - 0.8))
    pos1, pos2 = 1 + 4 * (1 - neg1), 1 + 4 * (1 - neg2)
    assert (neg1, pos1, neg2, pos2) == pytest.approx((0.916827, 1.332691, 0.003684, 4.985263), abs=1e-6)
    pos_w, neg_w = loss.weights()
    assert pos_w.tolist() == pytest.approx([1, pos1, pos2], rel=1e-6)
    assert neg_w.tolist() == pytest.approx([1, neg1, neg2], rel=1e-5)
    # loss 2 = ln 2 / 4 x (background 4 x 1 + class 1: 2 pos_w1 + 2 neg_w1 + class 2: pos_w2 + 3 neg_w2)
    #        = ln 2 / 4 x (4 + 2.665382 + 1.833655 + 4.985263 + 0.011053) = ln 2 / 4 x 13.495352 = 2.338566
    second = LN2 / 4 * (4 + 2 * pos1 + 2 * neg1 + pos2 + 3 * neg2)
    assert second == pytest.approx(2.338566, abs=1e-6)
    assert loss(logits, labels).item() == pytest.approx(second, rel=1e-6)
    # statistics add 0.5 x weight: class 1 pos 1 + 2 x 0.5 pos_w1, neg 1 + 2 x 0.5 neg_w1; class 2 likewise
    assert loss.pos_grad.tolist() == pytest.approx([1 + pos1, 0.5 + 0.5 * pos2], rel=1e-6)
    assert loss.neg_grad.tolist() == pytest.approx([1 + neg1, 1.5 + 1.5 * neg2], rel=1e-6)


@pytest.mark.parametrize("settings", [{}, {"gamma": 6.0, "mu": 0.5, "alpha": 2.0}])
def test_eqlv2_random_against_loop_reference(settings):
    calls = random_calls(classes=5, logits=6, rois=12, calls=3, seed=1)
    loss = EqualizationLossV2(5, [], 0, **settings)
    got = [loss(z, labels).item() for z, labels in calls]
    losses, pos_grad, neg_grad = eqlv2_reference(calls, **settings)
    assert got == pytest.approx(losses, rel=1e-5)
    assert loss.pos_grad.tolist() == pytest.approx(pos_grad, rel=1e-5)
    assert loss.neg_grad.tolist() == pytest.approx(neg_grad, rel=1e-5)
    assert loss.calls.item() == 3


def test_eqlv2_float32_logits_match():
    calls = random_calls(classes=4, logits=5, rois=10, calls=2, seed=2)
    loss = EqualizationLossV2(4, [], 0)
    got = [loss(z.float(), labels) for z, labels in calls]
    assert all(value.dtype == torch.float32 for value in got)
    assert [value.item() for value in got] == pytest.approx(eqlv2_reference(calls)[0], rel=1e-5)


def test_eqlv2_gradient():
    (z0, l0), (z1, l1) = random_calls(classes=3, logits=4, rois=5, calls=2, seed=3)
    loss = EqualizationLossV2(3, [], 0)
    loss(z0, l0)  # statistics of a first call, so that the weights of the second are not all 1
    before = copy.deepcopy(loss)
    z = z1.clone().requires_grad_(True)
    loss(z, l1).backward()
    # analytic: d/dz_ik of w_ik BCE(z_ik, t_ik) / R = w_ik (sigmoid(z_ik) - t_ik) / R
    target = torch.nn.functional.one_hot(l1, 4).double()
    pos_w, neg_w = before.weights()
    weight = target * pos_w.double() + (1 - target) * neg_w.double()
    assert torch.allclose(z.grad, weight * (torch.sigmoid(z1) - target) / 5, rtol=1e-6, atol=1e-9)
    # central finite differences, each from the state before the call (the weights do not depend on z)
    step = 1e-6
    for i, k in [(0, 0), (1, 2), (3, 3), (4, 1)]:
        shifted = [z1.clone(), z1.clone()]
        shifted[0][i, k] += step
        shifted[1][i, k] -= step
        plus, minus = (copy.deepcopy(before)(s, l1).item() for s in shifted)
        assert (plus - minus) / (2 * step) == pytest.approx(z.grad[i, k].item(), rel=1e-4, abs=1e-8)


def test_eqlv2_scores():
    z = torch.tensor([[0.0, math.log(3), -math.log(3)], [math.log(3), 0.0, 2.0]])
    scores = EqualizationLossV2(2, [], 0).scores(z)
    assert scores.shape == (2, 3)
    # row 0: background sigmoid(0) = 0.5; classes 0.75 x 0.5, 0.25 x 0.5
    # row 1: background sigmoid(ln 3) = 0.75; classes 0.5 x 0.25, sigmoid(2) x 0.25
    expected = [[0.5, 0.375, 0.125], [0.75, 0.125, sigmoid(2.0) * 0.25]]
    assert torch.allclose(scores, torch.tensor(expected))
    assert torch.allclose(scores.sum(1), torch.tensor([0.5 + 0.5 * 1.0, 0.75 + 0.25 * (0.5 + sigmoid(2.0))]))
    # the authors' get_activation in their layout (background last), mapped back
    probs = torch.sigmoid(torch.cat([z[:, 1:], z[:, :1]], 1))
    authors = torch.cat([probs[:, :-1] * (1 - probs[:, -1:]), probs[:, -1:]], 1)
    assert torch.allclose(scores, torch.cat([authors[:, -1:], authors[:, :-1]], 1))


def test_eqlv2_distributed_sum(monkeypatch):
    z, labels = random_calls(classes=3, logits=4, rois=6, calls=1, seed=4)[0]
    alone = EqualizationLossV2(3, [], 0)
    alone(z, labels)
    # two ranks with the same RoIs: all_reduce doubles what each adds
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.mul_(2))
    reduced = EqualizationLossV2(3, [], 0)
    reduced(z, labels)
    assert torch.allclose(reduced.pos_grad, 2 * alone.pos_grad)
    assert torch.allclose(reduced.neg_grad, 2 * alone.neg_grad)


def test_eqlv2_one_process_group(tmp_path):
    calls = random_calls(classes=3, logits=4, rois=6, calls=2, seed=5)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped = EqualizationLossV2(3, [], 0)
        got = [grouped(z, labels).item() for z, labels in calls]
    finally:
        dist.destroy_process_group()
    assert got == pytest.approx(eqlv2_reference(calls)[0], rel=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gamma": -1.0}, "eqlv2.gamma: -1.0 is out of range (allowed: >= 0)"),
        ({"mu": -0.5}, "eqlv2.mu: -0.5 is out of range (allowed: >= 0)"),
        ({"alpha": -4}, "eqlv2.alpha: -4.0 is out of range (allowed: >= 0)"),
        ({"gamma": "12"}, "eqlv2.gamma: '12' is not a float"),
    ],
)
def test_eqlv2_bad_settings(settings, message):
    with pytest.raises(ConfigError) as error:
        EqualizationLossV2(3, [], 0, **settings)
    assert str(error.value) == message


def test_eqlv2_state_dict_resume():
    calls = random_calls(classes=4, logits=5, rois=8, calls=3, seed=6)
    straight = EqualizationLossV2(4, [], 0)
    losses = [straight(z, labels).item() for z, labels in calls]
    saved = EqualizationLossV2(4, [], 0)
    for z, labels in calls[:2]:
        saved(z, labels)
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    assert set(saved.state_dict()) == {"pos_grad", "neg_grad", "calls"}
    restored = EqualizationLossV2(4, [], 0)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert restored(*calls[2]).item() == losses[2]
    for name, value in straight.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name


def test_eqlv2_unseen_class_and_edge_cases():
    loss = EqualizationLossV2(4, [], 0)
    labels = torch.tensor([0, 1, 1, 0, 2])  # classes 3 and 4 never positive: pos_grad 0, ratio 0
    for seed in range(3):
        z = torch.randn(5, 5, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        value = loss(z, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    assert loss.pos_grad[2:].tolist() == [0.0, 0.0]
    # no RoI: a zero loss and no statistics, as mmdet's bbox head skips the loss then
    before = copy.deepcopy(loss.state_dict())
    assert loss(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)).item() == 0.0
    assert all(torch.equal(before[name], value) for name, value in loss.state_dict().items())
    with pytest.raises(ValueError, match=r"\[R, C\+1\] = \[R, 5\]"):
        loss(torch.zeros(3, 6), torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- Seesaw


def seesaw_reference(calls: list, p: float = 0.8, q: float = 2.0, eps: float = 0.01) -> tuple:
    """mmdetection's SeesawLoss with loops, in its layout ([classes, object, background], background label C):
    the loss of each call (class + objectness, each / R) and the final counts (mmdet's order)."""
    losses, counts = [], None
    for logits, labels in calls:
        classes = logits.shape[1] - 2
        z = torch.cat([logits[:, 1:-1], logits[:, -1:], logits[:, :1]], 1).tolist()
        y = [classes if label == 0 else label - 1 for label in labels.tolist()]
        counts = counts or [0] * (classes + 1)
        for label in y:  # accumulated before the loss
            counts[label] += 1
        class_loss = objectness_loss = 0.0
        for row, label in zip(z, y, strict=True):
            if label < classes:
                top = max(row[:classes])
                total = sum(math.exp(x - top) for x in row[:classes])
                probs = [math.exp(x - top) / total for x in row[:classes]]
                adjusted = []
                for j in range(classes):
                    factor = 1.0
                    if j != label:
                        own, other = max(counts[label], 1), max(counts[j], 1)
                        if p > 0 and other < own:
                            factor *= (other / own) ** p
                        ratio = probs[j] / max(probs[label], eps)
                        if q > 0 and ratio > 1:
                            factor *= ratio**q
                    adjusted.append(row[j] + math.log(factor))
                class_loss += math.log(sum(math.exp(x) for x in adjusted)) - adjusted[label]
            pair = row[classes:]  # 0 object, 1 background
            objectness_loss += math.log(math.exp(pair[0]) + math.exp(pair[1])) - pair[int(label == classes)]
        losses.append((class_loss + objectness_loss) / len(z))
    return losses, counts


# C = 3, R = 4, labels [bg, 1, 1, 2]; columns [objectness bg, class 1, class 2, class 3, objectness object]
SEESAW_LABELS = torch.tensor([0, 1, 1, 2])
SEESAW_LOGITS = torch.tensor(
    [
        [math.log(3), 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, math.log(2), 0.0, 0.0, 0.0],
    ]
)


def test_seesaw_by_hand_two_calls():
    loss = SeesawLoss(3, [], 0)
    m = 0.5**0.8  # 0.574349
    # call 1: counts first: bg 1, class 1 2, class 2 1, class 3 0 (clamped to 1).
    # RoIs 1, 2 (class 1, logits 0, softmax 1/3 each, so no compensation): mitigation N_j / N_1 = 1/2 for
    #   classes 2 and 3: logits [0, ln m, ln m], CE = ln(1 + 2 m) = ln 2.148698 = 0.764862 each.
    # RoI 3 (class 2): N_j / N_2 >= 1, no mitigation; softmax of [ln 2, 0, 0] = [0.5, 0.25, 0.25]: class 1's
    #   0.5 / 0.25 = 2 > 1, compensation 2^2 = 4: logits [ln 2 + ln 4, 0, 0] = [ln 8, 0, 0], CE = ln 10.
    # objectness: RoI 0 (bg, [ln 3, 0] -> p_bg 0.75) ln(4/3); RoIs 1-3 [0, 0] ln 2 each.
    # loss 1 = (2 x 0.764862 + 2.302585 + 0.287682 + 3 x 0.693147) / 4 = 6.199433 / 4 = 1.549858
    first = (2 * math.log(1 + 2 * m) + math.log(10) + math.log(4 / 3) + 3 * LN2) / 4
    assert first == pytest.approx(1.549858, abs=1e-6)
    assert loss(SEESAW_LOGITS, SEESAW_LABELS).item() == pytest.approx(first, rel=1e-6)
    assert loss.cum_samples.tolist() == [1, 2, 1, 0]
    # call 2, the same RoIs: counts bg 2, class 1 4, class 2 2, class 3 0 (clamped to 1).
    # RoIs 1, 2: mitigation 2/4 = 0.5 and 1/4 = 0.25: CE = ln(1 + 0.5^0.8 + 0.25^0.8) = ln 1.904226 = 0.644076.
    # RoI 3: class 1 4/2 >= 1, none; class 3 1/2: 0.5^0.8; compensation 4 on class 1 as before:
    #   logits [ln 8, 0, ln m], CE = ln(8 + 1 + m) = ln 9.574349 = 2.259088. Objectness as before.
    # loss 2 = (2 x 0.644076 + 2.259088 + 0.287682 + 3 x 0.693147) / 4 = 5.914363 / 4 = 1.478591
    second = (2 * math.log(1 + m + 0.25**0.8) + math.log(9 + m) + math.log(4 / 3) + 3 * LN2) / 4
    assert second == pytest.approx(1.478591, abs=1e-6)
    assert loss(SEESAW_LOGITS, SEESAW_LABELS).item() == pytest.approx(second, rel=1e-6)
    assert loss.cum_samples.tolist() == [2, 4, 2, 0]


@pytest.mark.parametrize("settings", [{}, {"p": 0.0}, {"q": 0.0}, {"p": 1.5, "q": 1.0, "eps": 0.1}])
def test_seesaw_random_against_loop_reference(settings):
    calls = random_calls(classes=5, logits=7, rois=16, calls=3, seed=7)
    loss = SeesawLoss(5, [], 0, **settings)
    got = [loss(z, labels).item() for z, labels in calls]
    losses, counts = seesaw_reference(calls, **settings)
    assert got == pytest.approx(losses, rel=1e-6)
    assert loss.cum_samples.tolist() == [counts[-1], *counts[:-1]]  # lst's order: background first


def test_seesaw_float32_logits_match():
    calls = random_calls(classes=4, logits=6, rois=10, calls=2, seed=8)
    loss = SeesawLoss(4, [], 0)
    got = [loss(z.float(), labels) for z, labels in calls]
    assert all(value.dtype == torch.float32 for value in got)
    assert [value.item() for value in got] == pytest.approx(seesaw_reference(calls)[0], rel=1e-5)


def test_seesaw_gradient_by_hand():
    # the hand case's first call; the seesaw weights carry no gradient (mmdet's detached scores), so
    # d/dz = (softmax(adjusted logits) - one-hot) / R on the classes of the positives, and likewise on the
    # objectness pair of every RoI.
    m = 0.5**0.8
    a = 1 + 2 * m
    z = SEESAW_LOGITS.double().clone().requires_grad_(True)
    SeesawLoss(3, [], 0)(z, SEESAW_LABELS).backward()
    expected = torch.tensor(
        [
            [-0.25, 0, 0, 0, 0.25],  # bg: objectness softmax [0.75, 0.25] - [1, 0]; no class term
            [0.5, 1 / a - 1, m / a, m / a, -0.5],  # class 1: objectness [0.5, 0.5] - [0, 1]
            [0.5, 1 / a - 1, m / a, m / a, -0.5],
            [0.5, 0.8, 0.1 - 1, 0.1, -0.5],  # class 2: softmax of [ln 8, 0, 0] = [0.8, 0.1, 0.1]
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(z.grad, expected / 4, atol=1e-12)


def test_seesaw_gradient_finite_differences():
    # without the compensation (q = 0) the weights depend on the counts alone: finite differences apply
    (z0, l0), (z1, l1) = random_calls(classes=3, logits=5, rois=6, calls=2, seed=9)
    loss = SeesawLoss(3, [], 0, q=0.0)
    loss(z0, l0)
    before = copy.deepcopy(loss)
    z = z1.clone().requires_grad_(True)
    loss(z, l1).backward()
    step = 1e-6
    for i in range(6):
        for k in range(5):
            shifted = [z1.clone(), z1.clone()]
            shifted[0][i, k] += step
            shifted[1][i, k] -= step
            plus, minus = (copy.deepcopy(before)(s, l1).item() for s in shifted)
            assert (plus - minus) / (2 * step) == pytest.approx(z.grad[i, k].item(), rel=1e-5, abs=1e-8)


def test_seesaw_scores():
    scores = SeesawLoss(3, [], 0).scores(SEESAW_LOGITS)
    assert scores.shape == (4, 4)
    assert torch.allclose(scores.sum(1), torch.ones(4))
    # row 0: objectness [bg ln 3, object 0] -> 0.75, 0.25; classes uniform: 0.25 / 3 each
    # row 3: objectness 0.5, 0.5; classes softmax [ln 2, 0, 0] = [0.5, 0.25, 0.25] x 0.5
    assert scores[0].tolist() == pytest.approx([0.75, 1 / 12, 1 / 12, 1 / 12])
    assert scores[3].tolist() == pytest.approx([0.5, 0.25, 0.125, 0.125])
    # mmdet's get_activation in its layout ([classes, object, background]) gives [classes x p_object, p_bg]
    z = torch.randn(5, 5, generator=torch.Generator().manual_seed(10))
    mmdet_logits = torch.cat([z[:, 1:-1], z[:, -1:], z[:, :1]], 1)
    objectness = torch.softmax(mmdet_logits[:, -2:], -1)
    mmdet = torch.cat([torch.softmax(mmdet_logits[:, :-2], -1) * objectness[:, [0]], objectness[:, [1]]], 1)
    assert torch.allclose(SeesawLoss(3, [], 0).scores(z), torch.cat([mmdet[:, -1:], mmdet[:, :-1]], 1))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"p": -0.8}, "seesaw.p: -0.8 is out of range (allowed: >= 0)"),
        ({"q": -2}, "seesaw.q: -2.0 is out of range (allowed: >= 0)"),
        ({"eps": 0.0}, "seesaw.eps: 0.0 is out of range (allowed: > 0)"),
        ({"p": True}, "seesaw.p: True is not a float"),
    ],
)
def test_seesaw_bad_settings(settings, message):
    with pytest.raises(ConfigError) as error:
        SeesawLoss(3, [], 0, **settings)
    assert str(error.value) == message


def test_seesaw_state_dict_resume():
    calls = random_calls(classes=4, logits=6, rois=10, calls=3, seed=11)
    straight = SeesawLoss(4, [], 0)
    losses = [straight(z, labels).item() for z, labels in calls]
    saved = SeesawLoss(4, [], 0)
    for z, labels in calls[:2]:
        saved(z, labels)
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    assert set(saved.state_dict()) == {"cum_samples"}
    restored = SeesawLoss(4, [], 0)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert restored(*calls[2]).item() == losses[2]
    assert torch.equal(restored.cum_samples, straight.cum_samples)


def test_seesaw_unseen_class_and_edge_cases():
    loss = SeesawLoss(4, [], 0)
    labels = torch.tensor([0, 1, 1, 0, 2])  # classes 3 and 4 never seen: counts 0, clamped to 1
    for seed in range(3):
        z = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        value = loss(z, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    assert loss.cum_samples.tolist() == [6, 6, 3, 0, 0]
    # no positive RoI: the objectness term alone
    z = torch.zeros(3, 6)
    assert loss(z, torch.zeros(3, dtype=torch.long)).item() == pytest.approx(LN2)
    # no RoI: a zero loss and no counts
    assert loss(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)).item() == 0.0
    assert loss.cum_samples.tolist() == [9, 6, 3, 0, 0]
    with pytest.raises(ValueError, match=r"\[R, C\+2\] = \[R, 6\]"):
        loss(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- the registry


def test_classification_loss_builds_them_with_defaults():
    eqlv2 = classification_loss("eqlv2", 7, [1] * 7, 10)
    assert isinstance(eqlv2, EqualizationLossV2)
    assert (eqlv2.gamma, eqlv2.mu, eqlv2.alpha, eqlv2.num_logits) == (12.0, 0.8, 4.0, 8)
    seesaw = classification_loss("seesaw", 7, [1] * 7, 10)
    assert isinstance(seesaw, SeesawLoss)
    assert (seesaw.p, seesaw.q, seesaw.eps, seesaw.num_logits) == (0.8, 2.0, 0.01, 9)
    assert classification_loss("seesaw", 7, [1] * 7, 10, q=1.0).q == 1.0
    with pytest.raises(ConfigError, match="eqlv2.alpha"):
        classification_loss("eqlv2", 7, [1] * 7, 10, alpha=-1.0)
