"""The sigmoid RoI classification losses, EQL and the federated loss, against hand-computed values and loop
references.

The references work in the authors' layout (detectron2's: C class outputs with the background, label C, last
or absent), so they check lst's column mapping (background column 0, label 0) too.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from lst.errors import ConfigError
from lst.losses import classification_loss
from lst.losses.eql import EqualizationLoss
from lst.losses.federated import FederatedLoss

LN2, LN3 = math.log(2), math.log(3)


def bce(z: float, y: float) -> float:
    """Binary cross-entropy with logit ``z``: ``-y log s(z) - (1 - y) log(1 - s(z))``, written stably."""
    return max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))


def authors_layout(logits: torch.Tensor, labels: torch.Tensor) -> tuple[list, list]:
    """lst's ``[R, 1+C]`` logits and labels 0..C as the authors': C class logits, background label C."""
    classes = logits.shape[1] - 1
    z = logits[:, 1:].tolist()
    y = [classes if label == 0 else label - 1 for label in labels.tolist()]
    return z, y


def random_case(classes: int, rois: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits ``[rois, 1+classes]`` and labels in 0..classes, about a third background."""
    generator = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(rois, classes + 1, generator=generator, dtype=torch.float64)
    labels = torch.randint(1, classes + 1, (rois,), generator=generator)
    labels[torch.rand(rois, generator=generator) < 0.35] = 0
    return z, labels


def check_gradient(loss: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> None:
    """autograd's gradient = ``(sigmoid(z) - y) * w / R`` on the class columns, 0 on the background column."""
    logits = logits.clone().requires_grad_(True)
    loss(logits, labels).backward()
    target = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
    expected = (torch.sigmoid(logits.detach()) - target) * weight / logits.shape[0]
    expected[:, 0] = 0
    torch.testing.assert_close(logits.grad, expected)


# --------------------------------------------------------------------------- EQL


def eql_reference(logits: torch.Tensor, labels: torch.Tensor, frequency: list, lambda_: float) -> float:
    """eql.detectron2's ``eql_loss`` with loops, in its layout."""
    z, y = authors_layout(logits, labels)
    rois, classes = len(z), len(z[0])
    total = 0.0
    for i in range(rois):
        for j in range(classes):
            target = 1.0 if y[i] == j else 0.0
            exclude = 1.0 if y[i] != classes else 0.0  # exclude_func: 0 for the background RoIs
            threshold = 1.0 if frequency[j] < lambda_ else 0.0  # threshold_func
            total += bce(z[i][j], target) * (1 - exclude * threshold * (1 - target))
    return total / rois


# class 1 in 1 of 1000 images (rare at the default lambda 0.00177), class 2 in 100 (frequent)
EQL_COUNTS, EQL_IMAGES = [1, 100], 1000
# column 0 (background) is not used: its values (+-5) must not matter
EQL_LOGITS = torch.tensor([[5.0, LN3, 0.0], [5.0, -LN3, LN3], [-5.0, LN3, -LN3]], dtype=torch.float64)
EQL_LABELS = torch.tensor([2, 1, 0])


def test_eql_by_hand() -> None:
    # BCE(z, 1) = log(1 + e^-z), BCE(z, 0) = log(1 + e^z): BCE(0, .) = ln 2, BCE(ln3, 0) = BCE(-ln3, 1) = ln 4,
    # BCE(-ln3, 0) = BCE(ln3, 1) = ln(4/3)
    # RoI 1 (class 2): class 1 rare and negative on a foreground RoI -> weight 0; class 2 BCE(0, 1) = ln 2
    # RoI 2 (class 1): class 1 BCE(-ln3, 1) = ln 4; class 2 (frequent) BCE(ln3, 0) = ln 4
    # RoI 3 (background, E = 0, weights 1): class 1 BCE(ln3, 0) = ln 4; class 2 BCE(-ln3, 0) = ln(4/3)
    # sum: ln2 + 2 ln4 + ln4 + ln(4/3) = 9 ln2 - ln3, over R = 3
    loss = EqualizationLoss(2, EQL_COUNTS, EQL_IMAGES)
    assert loss(EQL_LOGITS, EQL_LABELS).item() == pytest.approx((9 * LN2 - LN3) / 3, rel=1e-12)
    # lambda 0: no class rare, RoI 1's class 1 BCE(ln3, 0) = ln 4 comes back: (11 ln2 - ln3) / 3
    plain = EqualizationLoss(2, EQL_COUNTS, EQL_IMAGES, lambda_=0.0)
    assert plain(EQL_LOGITS, EQL_LABELS).item() == pytest.approx((11 * LN2 - LN3) / 3, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eql_matches_reference(seed: int) -> None:
    classes, images = 7, 500
    z, labels = random_case(classes, 24, seed)
    counts = torch.randint(0, 3, (classes,), generator=torch.Generator().manual_seed(seed)).tolist()
    counts[seed] = 0  # a class with no training image: rare
    lambda_ = 0.003  # counts 0 and 1 (freq 0, 0.002) rare, 2 (0.004) not
    loss = EqualizationLoss(classes, counts, images, lambda_=lambda_)
    expected = eql_reference(z, labels, [c / images for c in counts], lambda_)
    assert loss(z, labels).item() == pytest.approx(expected, rel=1e-12)


def test_eql_gradient() -> None:
    loss = EqualizationLoss(2, EQL_COUNTS, EQL_IMAGES)
    weight = torch.ones(3, 3, dtype=torch.float64)
    weight[0, 1] = 0  # the one term EQL drops: RoI 1's rare class 1 (test_eql_by_hand)
    check_gradient(loss, EQL_LOGITS, EQL_LABELS, weight)


def test_eql_scores() -> None:
    loss = EqualizationLoss(2, EQL_COUNTS, EQL_IMAGES)
    scores = loss.scores(EQL_LOGITS)
    assert scores.shape == (3, 3)
    assert torch.equal(scores[:, 0], torch.zeros(3, dtype=torch.float64))  # the authors' dummy background
    torch.testing.assert_close(scores[:, 1:], torch.sigmoid(EQL_LOGITS[:, 1:]))
    assert scores[1, 2].item() == pytest.approx(0.75)  # sigmoid(ln 3)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_eql_bad_lambda(value: float) -> None:
    with pytest.raises(ConfigError, match=r"eql\.lambda_: .* out of range \(allowed: in \[0, 1\]\)"):
        EqualizationLoss(2, EQL_COUNTS, EQL_IMAGES, lambda_=value)


def test_eql_bad_input() -> None:
    with pytest.raises(ValueError, match="image counts"):
        EqualizationLoss(3, EQL_COUNTS, EQL_IMAGES)
    with pytest.raises(ValueError, match=r"\[R, 1\+C\] = \[R, 3\]"):
        EqualizationLoss(2, EQL_COUNTS, EQL_IMAGES)(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


def test_eql_zero_images_finite() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([1, 2, 0, 2])
    for counts, images in (([0, 5], 10), ([0, 0], 0)):
        value = EqualizationLoss(2, counts, images)(logits, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    empty = EqualizationLoss(2, [0, 5], 10)(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0


# --------------------------------------------------------------------------- federated


def federated_reference(logits: torch.Tensor, labels: torch.Tensor, kept: list) -> float:
    """detectron2's ``sigmoid_cross_entropy_loss`` with the fed-loss mask of the classes ``kept`` (lst's 1..C),
    with loops, in its layout."""
    z, y = authors_layout(logits, labels)
    rois = len(z)
    total = 0.0
    for i in range(rois):
        for j in (k - 1 for k in kept):  # lst's class k is detectron2's column k - 1
            total += bce(z[i][j], 1.0 if y[i] == j else 0.0)
    return total / rois


# classes 1 and 2 in 4 and 9 images (weights 2 and 3), class 3 in none (never drawn)
FED_COUNTS, FED_IMAGES = [4, 9, 0], 20
# column 0 (background) and class 3 are not in the loss: their values (9, 7) must not matter
FED_LOGITS = torch.tensor([[9.0, 0.0, LN3, 7.0], [9.0, -LN3, -LN3, 7.0], [9.0, LN3, 0.0, 7.0]], dtype=torch.float64)
FED_LABELS = torch.tensor([1, 0, 1])


@pytest.mark.parametrize("settings", [{}, {"num_classes_sampled": 3}])
def test_federated_by_hand(settings: dict) -> None:
    # present labels {0, 1}; 3 (or the default 50) in all -> classes drawn from {2, 3}: class 3 has weight 0,
    # so class 2 is drawn (and no more can be): the loss has the columns of classes 1 and 2
    # RoI 1 (class 1): class 1 BCE(0, 1) = ln 2; class 2 BCE(ln3, 0) = ln 4
    # RoI 2 (background): class 1 BCE(-ln3, 0) = ln(4/3); class 2 BCE(-ln3, 0) = ln(4/3)
    # RoI 3 (class 1): class 1 BCE(ln3, 1) = ln(4/3); class 2 BCE(0, 0) = ln 2
    # sum: 4 ln2 + 3 ln(4/3) = 10 ln2 - 3 ln3, over R = 3
    loss = FederatedLoss(3, FED_COUNTS, FED_IMAGES, **settings)
    assert loss(FED_LOGITS, FED_LABELS).item() == pytest.approx((10 * LN2 - 3 * LN3) / 3, rel=1e-12)
    assert loss.last_classes.tolist() == [1, 2]


def test_federated_no_draw_when_enough_present() -> None:
    # num_classes_sampled 2: the present labels {0, 1} are already 2, nothing drawn -> class 1 only:
    # ln2 + ln(4/3) + ln(4/3) = 5 ln2 - 2 ln3, over 3
    loss = FederatedLoss(3, FED_COUNTS, FED_IMAGES, num_classes_sampled=2)
    assert loss(FED_LOGITS, FED_LABELS).item() == pytest.approx((5 * LN2 - 2 * LN3) / 3, rel=1e-12)
    assert loss.last_classes.tolist() == [1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_federated_matches_reference(seed: int) -> None:
    classes = 80
    z, labels = random_case(classes, 32, seed)
    counts = torch.randint(1, 1000, (classes,), generator=torch.Generator().manual_seed(seed)).tolist()
    loss = FederatedLoss(classes, counts, 5000, num_classes_sampled=20, seed=seed)
    value = loss(z, labels).item()
    kept = loss.last_classes.tolist()
    present = set(labels.tolist())
    assert present - {0} <= set(kept)
    assert len(kept) == max(20 - len(present), 0) + len(present - {0})  # the background counts among the 20
    assert value == pytest.approx(federated_reference(z, labels, kept), rel=1e-12)


def test_federated_gradient() -> None:
    loss = FederatedLoss(3, FED_COUNTS, FED_IMAGES)
    weight = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64).expand(3, 4)  # classes 1 and 2 kept
    check_gradient(loss, FED_LOGITS, FED_LABELS, weight)


def test_federated_scores() -> None:
    loss = FederatedLoss(3, FED_COUNTS, FED_IMAGES)
    scores = loss.scores(FED_LOGITS)
    assert scores.shape == (3, 4)
    assert torch.equal(scores[:, 0], torch.zeros(3, dtype=torch.float64))  # as EQL's
    torch.testing.assert_close(scores[:, 1:], torch.sigmoid(FED_LOGITS[:, 1:]))
    assert scores[0, 2].item() == pytest.approx(0.75)  # sigmoid(ln 3)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"num_classes_sampled": 0}, "federated.num_classes_sampled"),
        ({"num_classes_sampled": 2.5}, "federated.num_classes_sampled"),
        ({"freq_weight_power": -1.0}, "federated.freq_weight_power"),
        ({"seed": -1}, "federated.seed"),
    ],
)
def test_federated_bad_settings(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        FederatedLoss(3, FED_COUNTS, FED_IMAGES, **settings)


def test_federated_zero_images_never_drawn() -> None:
    classes = 60
    counts = [0 if j % 3 == 0 else j for j in range(classes)]  # lst classes 1, 4, 7, ... have no image
    never = {j + 1 for j in range(classes) if counts[j] == 0}
    loss = FederatedLoss(classes, counts, 100, freq_weight_power=0.0)  # 0 ** 0 must still be weight 0
    labels = torch.tensor([0, 2, 3, 0])
    for _ in range(20):
        logits = torch.randn(4, classes + 1, requires_grad=True)
        value = loss(logits, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        assert not set(loss.last_classes.tolist()) & never
        assert len(loss.last_classes) == classes - len(never)  # 38 drawable < the 47 missing: all of them
    # a zero-image class that is a label is kept (its positive term), never NaN
    value = loss(torch.randn(2, classes + 1), torch.tensor([1, 0]))
    assert torch.isfinite(value) and 1 in loss.last_classes.tolist()


def test_federated_draws() -> None:
    classes = 100
    counts = list(range(1, classes + 1))
    loss = FederatedLoss(classes, counts, 1000)
    labels = torch.tensor([0, 3, 3, 17, 42, 0, 99, 5])
    draws = []
    for _ in range(3):
        loss(torch.randn(8, classes + 1), labels)
        kept = loss.last_classes
        assert kept.dtype == torch.long and kept.min() >= 1 and kept.max() <= classes
        assert {3, 5, 17, 42, 99} <= set(kept.tolist())
        assert len(kept) == 49  # 50 with the background label, as detectron2's unique(gt_classes)
        draws.append(kept.tolist())
    assert draws[0] != draws[1] != draws[2]
    loss(torch.randn(2, classes + 1), torch.tensor([3, 5]))  # no background RoI: 50 classes
    assert len(loss.last_classes) == 50
    few = FederatedLoss(10, list(range(1, 11)), 100)  # fewer than 50 classes: all of them
    few(torch.randn(3, 11), torch.tensor([0, 2, 2]))
    assert few.last_classes.tolist() == list(range(1, 11))


def test_federated_draw_probabilities() -> None:
    # all RoIs background, one class to draw from weights sqrt(1) = 1 and sqrt(100) = 10: class 2 with 10/11
    loss = FederatedLoss(2, [1, 100], 200, num_classes_sampled=2)
    labels = torch.zeros(2, dtype=torch.long)
    drawn = []
    for _ in range(2000):
        loss(torch.zeros(2, 3), labels)
        drawn.append(loss.last_classes.item())
    assert drawn.count(2) / 2000 == pytest.approx(10 / 11, abs=0.03)  # sd 0.0064


def test_federated_state_restores_draws() -> None:
    classes = 100
    counts = list(range(1, classes + 1))
    calls = [(torch.randn(6, classes + 1), torch.tensor([0, 1, 7, 7, 0, 64])) for _ in range(3)]
    straight = FederatedLoss(classes, counts, 1000)
    expected = []
    for logits, labels in calls:
        expected.append((straight(logits, labels).item(), straight.last_classes.tolist()))

    first = FederatedLoss(classes, counts, 1000)
    first(*calls[0])
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)  # as the trainer's last.pt, read back weights-only
    saved.seek(0)
    resumed = FederatedLoss(classes, counts, 1000)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    for (logits, labels), (value, kept) in zip(calls[1:], expected[1:], strict=True):
        assert resumed(logits, labels).item() == value
        assert resumed.last_classes.tolist() == kept
    # an unrestored module (same seed) draws the first call's classes again, another seed others
    fresh = FederatedLoss(classes, counts, 1000)
    fresh(*calls[1])
    assert fresh.last_classes.tolist() == expected[0][1] != expected[1][1]
    other = FederatedLoss(classes, counts, 1000, seed=1)
    other(*calls[0])
    assert other.last_classes.tolist() != expected[0][1]


def test_federated_empty_and_shape() -> None:
    loss = FederatedLoss(3, FED_COUNTS, FED_IMAGES)
    state = loss.generator.get_state()
    logits = torch.zeros(0, 4, requires_grad=True)
    value = loss(logits, torch.zeros(0, dtype=torch.long))
    value.backward()
    assert value.item() == 0 and len(loss.last_classes) == 0
    assert torch.equal(loss.generator.get_state(), state)  # no RoI, no draw
    with pytest.raises(ValueError, match=r"\[R, 1\+C\] = \[R, 4\]"):
        loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="image counts"):
        FederatedLoss(2, FED_COUNTS, FED_IMAGES)


# --------------------------------------------------------------------------- the registry


def test_registry_builds_with_defaults() -> None:
    eql = classification_loss("eql", 2, EQL_COUNTS, EQL_IMAGES)
    assert isinstance(eql, EqualizationLoss) and eql.lambda_ == 0.00177
    assert eql.rare.tolist() == [1.0, 0.0]
    federated = classification_loss("federated", 3, FED_COUNTS, FED_IMAGES)
    assert isinstance(federated, FederatedLoss)
    assert (federated.num_classes_sampled, federated.freq_weight_power, federated.seed) == (50, 0.5, 0)
    assert classification_loss("eql", 2, EQL_COUNTS, EQL_IMAGES, lambda_=0.0011).lambda_ == 0.0011
    with pytest.raises(ConfigError, match=r"federated\.num_classes_sampled"):
        classification_loss("federated", 3, FED_COUNTS, FED_IMAGES, num_classes_sampled=0)
