import pyarrow as pa
import torch
from test_model import SMALL

from lst.distill import DistillationLoss, box_cosines
from lst.model import build_model
from lst.tables import logits_schema


def _table(rows):
    schema = logits_schema(3)
    return pa.Table.from_pylist(
        [{"image_id": i, "flip": f, "annotation_id": a, "logits": v} for i, f, a, v in rows], schema=schema
    )


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4).eval()  # student: background + 2 old + 1 new
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    boxes = [torch.tensor([[4.0, 4, 30, 30], [10, 20, 50, 60]]), torch.tensor([[0.0, 0, 20, 40]])]
    teacher = {  # teacher over background + 2 old classes
        (1, False, 100): [0.1, 0.5, -0.2],
        (1, False, 101): [0.0, 0.3, 0.3],
        (2, True, 200): [0.2, -0.1, 0.4],
    }
    targets = [
        {"image_id": torch.tensor(1), "flip": torch.tensor(False), "boxes": boxes[0],
         "annotation_ids": torch.tensor([100, 101])},
        # annotation 201 has no teacher row (an old-class object): it is not distilled
        {"image_id": torch.tensor(2), "flip": torch.tensor(True), "boxes": torch.cat([boxes[1], boxes[1]]),
         "annotation_ids": torch.tensor([200, 201])},
    ]  # fmt: skip
    loss = DistillationLoss(_table([(*k, v) for k, v in teacher.items()]), weight=2.0)(model, images, targets)
    student = torch.cat(box_cosines(model, images, boxes)).detach()
    expected = 0.0
    for row, value in zip(student, teacher.values(), strict=True):
        expected += sum((float(row[c]) - value[c]) ** 2 for c in (1, 2))  # background dropped, new class ignored
    expected = 2.0 * expected / 3
    assert abs(float(loss["loss_distill"]) - expected) < 1e-5


def test_no_teacher_rows_gives_zero():
    model = build_model(SMALL, num_classes=4)
    target = {"image_id": torch.tensor(5), "flip": torch.tensor(False), "boxes": torch.zeros(0, 4),
              "annotation_ids": torch.zeros(0, dtype=torch.int64)}  # fmt: skip
    loss = DistillationLoss(_table([]))(model, [torch.rand(3, 64, 64)], [target])
    assert float(loss["loss_distill"]) == 0.0


def test_box_cosines_match_the_predictor_on_resized_boxes():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3).eval()
    image = torch.rand(3, 32, 32)  # resized x2 to min_size 64
    box = torch.tensor([[2.0, 2, 14, 14]])
    (cos,) = box_cosines(model, [image], [box])
    image_list, _ = model.transform([image])
    features = model.backbone(image_list.tensors)
    pooled = model.roi_heads.box_roi_pool(features, [box * 2], image_list.image_sizes)
    expected = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))[0] / 10.0
    torch.testing.assert_close(cos, expected)
