"""The long-tail losses inside the model: a method file's ``loss``, Seesaw's extra logit through growth and
distillation, the checks at load."""

import numpy as np
import pytest
import torch
from conftest import SMALL

from lst.data.sampling import phase_seed
from lst.errors import CheckpointError, ConfigError
from lst.losses import LOSSES
from lst.methods import ClassInfo, load_method
from lst.methods.logit_distillation import box_cosines
from lst.modeling.mask_rcnn import build_model, grow_classifier
from lst.modeling.roi_heads import set_classification
from lst.steps import check_loss_layout


def joint_with(loss: str, **settings) -> object:
    block = {"name": f"joint_{loss}", "family": "joint", "settings": {}, "loss": {"name": loss, "settings": settings}}
    return load_method(block)


def classes(num: int = 3, seed: int = 0, phase: int = 0) -> ClassInfo:
    return ClassInfo(tuple(range(1, num + 1)), np.array([40, 5, 0][:num]), 50, 0, phase, seed)


def test_seesaw_models_keep_the_objectness_logit_last_through_growth():
    torch.manual_seed(0)
    old = build_model({**SMALL, "extra_logits": 1}, num_classes=4).eval()
    assert old.roi_heads.box_predictor.cls_score.weight.shape[0] == 5  # background, 3 classes, objectness
    assert old.roi_heads.box_predictor.bbox_pred.out_features == 16  # no box regression of its own
    grown = grow_classifier(old.state_dict(), 7, torch.Generator().manual_seed(1))
    new = build_model({**SMALL, "extra_logits": 1}, num_classes=7).eval()
    new.load_state_dict(grown)
    features = torch.randn(6, 32)
    (old_logits, old_boxes), (new_logits, new_boxes) = (
        old.roi_heads.box_predictor(features),
        new.roi_heads.box_predictor(features),
    )
    assert torch.equal(new_logits[:, :4], old_logits[:, :4]) and torch.equal(new_boxes[:, :16], old_boxes)
    torch.testing.assert_close(new_logits[:, 7], old_logits[:, 4])  # the same row (a matmul of another width)
    rows, old_rows = (
        grown["roi_heads.box_predictor.cls_score.weight"],
        old.state_dict()["roi_heads.box_predictor.cls_score.weight"],
    )
    assert torch.equal(rows[:4], old_rows[:4]) and torch.equal(rows[7], old_rows[4])
    assert 0.003 < rows[4:7].std() < 0.03  # the new classes' rows, N(0, 0.01), before the objectness row
    # distillation reads background + classes only: the teacher's objectness is not a class score
    image, boxes = [torch.rand(3, 64, 64)], [torch.tensor([[4.0, 4.0, 30.0, 30.0]])]
    with torch.no_grad():
        assert box_cosines(new, image, boxes)[0].shape == (1, 7)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_each_loss_trains_the_model_and_scores_its_detections(loss):
    torch.manual_seed(0)
    method = joint_with(loss)
    model = build_model({**SMALL, "extra_logits": method.extra_logits()}, num_classes=4)
    classification = method.classification_loss(classes())
    set_classification(model.roi_heads, classification)
    image = [torch.rand(3, 64, 64)]
    target = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([2]),
               "masks": torch.zeros(1, 64, 64, dtype=torch.uint8).index_fill_(1, torch.arange(4, 40), 1)}]  # fmt: skip
    losses = model.train()(image, target)
    assert torch.isfinite(losses["loss_classifier"]) and losses["loss_classifier"] > 0
    losses["loss_classifier"].backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    if loss == "eqlv2":
        assert int(classification.calls) == 1  # its statistics took this call's gradients
    if loss == "seesaw":
        assert int(classification.cum_samples.sum()) == SMALL["box_batch_size_per_image"]
    with torch.no_grad():
        (detections,) = model.eval()(image)
    assert ((detections["scores"] >= 0) & (detections["scores"] <= 1)).all()
    assert set(detections["labels"].tolist()) <= {1, 2, 3}


def test_a_methods_loss_takes_its_settings_and_the_runs_seed():
    assert joint_with("seesaw", p=0.5).classification_loss(classes()).p == 0.5
    assert joint_with("eql").classification_loss(classes()).lambda_ == 0.00177  # the authors' default
    federated = joint_with("federated").classification_loss(classes(seed=3, phase=1))
    assert federated.seed == phase_seed(3, 1)  # its draws differ by seed and phase, as the run's
    assert joint_with("federated", seed=7).classification_loss(classes(seed=3)).seed == 7


@pytest.mark.parametrize(
    "loss, settings, message",
    [
        ("seasaw", {}, "method.loss.name: 'seasaw' is not a loss of lst.losses (cross_entropy, eql, eqlv2, seesaw"),
        ("seesaw", {"p": -1}, "method.loss.settings.p: -1.0 is out of range (allowed: >= 0)"),
        ("eql", {"lambda_": 2}, "method.loss.settings.lambda_: 2.0 is out of range (allowed: in [0, 1])"),
        ("eqlv2", {"gama": 1}, "method.loss.settings.gama: not a setting of EQLv2Settings (did you mean gamma?)"),
        ("federated", {"num_classes_sampled": 0}, "method.loss.settings.num_classes_sampled: 0 is out of range"),
    ],
)
def test_a_bad_loss_is_refused_at_load_naming_the_key(loss, settings, message):
    with pytest.raises(ConfigError) as error:
        joint_with(loss, **settings)
    assert message in str(error.value)


def test_a_model_without_the_losss_logits_is_refused():
    with pytest.raises(CheckpointError) as error:
        check_loss_layout(joint_with("seesaw"), {"cosine_scale": 10.0}, "base/phase0/model.pt")
    assert str(error.value) == (
        "base/phase0/model.pt: its model has 0 class logits beyond background + classes, method joint_seesaw's loss "
        "seesaw needs 1; its phase-0 model (method.base) must be trained with that layout"
    )
    check_loss_layout(joint_with("eqlv2"), {"cosine_scale": 10.0}, "base/phase0/model.pt")  # same layout: fine
