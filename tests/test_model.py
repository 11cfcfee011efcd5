import torch
from conftest import SMALL

from lst.modeling.checkpoint import load_checkpoint, save_checkpoint
from lst.modeling.mask_rcnn import build_model, grow_classifier


def _class_outputs(model, features):
    predictor = model.roi_heads.box_predictor
    logits, boxes = predictor(features)
    mask_logits = model.roi_heads.mask_predictor.mask_fcn_logits(torch.ones(2, 8, 4, 4))
    return logits, boxes, mask_logits


def test_cosine_classifier_is_scaled_cosine():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4)
    predictor = model.roi_heads.box_predictor
    features = torch.randn(5, 32)
    logits, _ = predictor(features)
    weight = predictor.cls_score.weight
    expected = 10.0 * torch.stack([torch.cosine_similarity(f[None], weight, dim=1) for f in features])
    torch.testing.assert_close(logits, expected)
    assert predictor.scale.requires_grad


def test_growth_keeps_old_outputs_identical():
    torch.manual_seed(0)
    old = build_model(SMALL, num_classes=4).eval()
    grown_state = grow_classifier(old.state_dict(), 7, torch.Generator().manual_seed(1))
    new = build_model(SMALL, num_classes=7).eval()
    new.load_state_dict(grown_state)
    features = torch.randn(6, 32)
    old_logits, old_boxes, old_masks = _class_outputs(old, features)
    new_logits, new_boxes, new_masks = _class_outputs(new, features)
    assert torch.equal(new_logits[:, :4], old_logits)
    assert torch.equal(new_boxes[:, :16], old_boxes)
    assert torch.equal(new_masks[:, :4], old_masks)
    # new rows as the released code: cls ~ N(0, 0.01), box ~ N(0, 0.001), biases 0
    cls_new = grown_state["roi_heads.box_predictor.cls_score.weight"][4:]
    assert cls_new.shape == (3, 32) and 0.003 < cls_new.std() < 0.03
    assert torch.all(grown_state["roi_heads.box_predictor.bbox_pred.bias"][16:] == 0)
    assert grown_state["roi_heads.box_predictor.bbox_pred.weight"][16:].abs().max() < 0.01
    # whole-model outputs of old classes on an image are unchanged where boxes agree
    image = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        a, b = old.backbone(old.transform(image)[0].tensors), new.backbone(new.transform(image)[0].tensors)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model = build_model(SMALL, num_classes=3)
    path = tmp_path / "m.pt"
    save_checkpoint({"model": model.state_dict(), "category_ids": [4, 2], "config": {"model": SMALL}}, path)
    loaded = load_checkpoint(path, required=("model", "category_ids"))
    assert loaded["category_ids"] == [4, 2]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded["model"].items())
    assert not list(tmp_path.glob(".*tmp"))


def test_restrict_positives_on_constructed_labels():
    from lst.modeling.roi_heads import restrict_positives

    labels = torch.tensor([0, 3, 5, 3, -1, 0, 7])
    # target 3: RoIs of classes 5 and 7 leave the box loss, background and ignored stay
    assert restrict_positives(labels, 3).tolist() == [0, 3, -1, 3, -1, 0, -1]
    # no RoI matched the target: every positive is kept (fallback)
    assert restrict_positives(labels, 4).tolist() == labels.tolist()
    # no target class (base / joint samples)
    assert restrict_positives(labels, 0).tolist() == labels.tolist()


def test_roi_sampling_keeps_only_target_class_positives():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4)
    boxes = torch.tensor([[0.0, 0, 20, 20], [30, 30, 60, 60], [5, 35, 25, 60]])
    proposals = [torch.cat([boxes + d for d in (0.0, 0.5, 1.0)])]
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 2]), "masks": torch.zeros(3, 64, 64, dtype=torch.uint8)}
    _, _, labels, _ = model.roi_heads.select_training_samples(
        [p.clone() for p in proposals], [dict(target, target_label=torch.tensor(2))]
    )
    assert set(labels[0].tolist()) <= {0, 2} and 2 in labels[0].tolist()
    _, _, labels, _ = model.roi_heads.select_training_samples([p.clone() for p in proposals], [target])
    assert {1, 2} <= set(labels[0].tolist())


def test_mask_weight_transfer_follows_classifier_rows_and_survives_growth():
    torch.manual_seed(0)
    cfg = dict(SMALL, mask_weight_transfer=True, mask_mlp=True)
    old = build_model(cfg, num_classes=4).eval()
    predictor = old.roi_heads.mask_predictor
    features = torch.randn(3, 8, 14, 14)
    logits = predictor(features)
    assert logits.shape == (3, 4, 28, 28)
    # by hand: 1x1 filters from the transfer MLP of the cls rows, plus the class-agnostic MLP
    x = torch.relu(predictor.conv5_mask(features))
    filters = predictor.transfer(old.roi_heads.box_predictor.cls_score.weight)
    expected = (x[:, None] * filters[None, :, :, None, None]).sum(2) + predictor.mlp(x.flatten(1)).view(3, 1, 28, 28)
    torch.testing.assert_close(logits, expected)
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight" not in old.state_dict()
    new = build_model(cfg, num_classes=6).eval()
    new.load_state_dict(grow_classifier(old.state_dict(), 6, torch.Generator().manual_seed(0)))
    assert torch.equal(new.roi_heads.mask_predictor(features)[:, :4], logits)
    # the mask loss does not reach the classifier rows
    new.roi_heads.mask_predictor(features).sum().backward()
    assert new.roi_heads.box_predictor.cls_score.weight.grad is None
    # released: not detached, the mask loss trains the classifier rows too
    released = build_model(dict(cfg, mask_transfer_detach=False), num_classes=6)
    released.roi_heads.mask_predictor(features).sum().backward()
    assert released.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def test_mask_mlp_is_initialised_as_released():
    torch.manual_seed(0)
    mlp = build_model(dict(SMALL, mask_weight_transfer=True, mask_mlp=True), 4).roi_heads.mask_predictor.mlp
    assert torch.all(mlp.bias == 0)
    # kaiming normal, fan_out mode (784 outputs), ReLU gain: std sqrt(2 / 784)
    assert abs(float(mlp.weight.std()) / (2 / 784) ** 0.5 - 1) < 0.02


def test_box_regression_reads_relu_of_fc7_and_the_classifier_fc7():
    torch.manual_seed(0)
    predictor = build_model(dict(SMALL, regression_relu=True), num_classes=4).roi_heads.box_predictor
    features = torch.randn(5, 32)
    logits, deltas = predictor(features)
    torch.testing.assert_close(deltas, predictor.bbox_pred(torch.relu(features)))
    expected = (
        10.0 * torch.nn.functional.normalize(features) @ torch.nn.functional.normalize(predictor.cls_score.weight).t()
    )
    torch.testing.assert_close(logits, expected)  # signed features: no ReLU before the cosine
    plain = build_model(dict(SMALL, regression_relu=False), num_classes=4).roi_heads.box_predictor
    plain.load_state_dict(predictor.state_dict())
    torch.testing.assert_close(plain(features)[1], predictor.bbox_pred(features))


def test_fallback_keeps_the_first_positives_of_any_class():
    from lst.modeling.roi_heads import restrict_positives

    labels = torch.tensor([0, 5, 7, 0, 5, 6, -1, 7])
    assert restrict_positives(labels, 3, fallback=2).tolist() == [0, 5, 7, 0, -1, -1, -1, -1]
    assert restrict_positives(labels, 3, fallback=None).tolist() == labels.tolist()
    assert restrict_positives(labels, 5, fallback=2).tolist() == [0, 5, -1, 0, 5, -1, -1, -1]
    model = build_model(dict(SMALL, target_fallback_positives=10), num_classes=4)
    assert model.roi_heads.fallback_positives == 10
