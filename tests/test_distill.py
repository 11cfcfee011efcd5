import pyarrow as pa
import torch
from conftest import SMALL

from lst.data.tables import logits_schema
from lst.methods.logit_distillation import DistillationLoss, box_cosines
from lst.modeling.mask_rcnn import build_model


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
    loss = DistillationLoss(_table([(*k, v) for k, v in teacher.items()]), weight=2.0).loss(model, images, targets)
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
    loss = DistillationLoss(_table([])).loss(model, [torch.rand(3, 64, 64)], [target])
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


def _group_case(seed: int = 0):
    """16 images of a global batch with 0 to 3 distilled boxes each, and the teacher's rows for them."""
    generator = torch.Generator().manual_seed(seed)
    images, targets, teacher = [], [], {}
    for image_id in range(16):
        count = int(torch.randint(0, 4, (1,), generator=generator))
        corners = torch.rand(count, 2, generator=generator) * 30
        boxes = torch.cat([corners, corners + 10 + torch.rand(count, 2, generator=generator) * 20], dim=1)
        ids = torch.arange(count) + 100 * image_id
        for a in ids.tolist():
            teacher[(image_id, False, a)] = torch.rand(3, generator=generator).tolist()
        images.append(torch.rand(3, 64, 64, generator=generator))
        targets.append({"image_id": torch.tensor(image_id), "flip": torch.tensor(False), "boxes": boxes,
                        "annotation_ids": ids})  # fmt: skip
    return images, targets, _table([(*k, v) for k, v in teacher.items()])


def test_loss_is_the_mean_over_groups_of_two_images():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4).eval()
    images, targets, table = _group_case()
    loss = float(DistillationLoss(table, weight=1.5, group_images=2).loss(model, images, targets)["loss_distill"])
    teacher = {(r["image_id"], r["annotation_id"]): r["logits"] for r in table.to_pylist()}
    expected = 0.0
    for first in range(0, 16, 2):  # the released per-GPU quantity of 8 GPUs x 2 images, averaged over GPUs
        group = targets[first : first + 2]
        boxes = [t["boxes"] for t in group]
        if sum(len(b) for b in boxes) == 0:
            continue  # a GPU without a distilled box contributes 0 (and still counts in the mean)
        student = torch.cat(box_cosines(model, images[first : first + 2], boxes)).detach()
        rows = [teacher[(int(t["image_id"]), int(a))] for t in group for a in t["annotation_ids"]]
        squares = sum((float(s[c]) - row[c]) ** 2 for s, row in zip(student, rows, strict=True) for c in (1, 2))
        expected += squares / len(rows)
    assert sum(len(t["boxes"]) == 0 for t in targets) > 0  # the case has images without distilled boxes
    assert abs(loss - 1.5 * expected / 8) < 1e-5


def _two_process_gradient(rank: int, world: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4).eval()
    images, targets, table = _group_case()
    half = slice(8 * rank, 8 * rank + 8)
    loss = DistillationLoss(table).loss(model, images[half], targets[half])["loss_distill"]
    loss.backward()
    gradient = model.roi_heads.box_head.fc7.weight.grad.clone()
    torch.distributed.all_reduce(gradient)  # what DDP does: the mean of the ranks' gradients
    value = loss.detach().clone()
    torch.distributed.all_reduce(value)  # what the engine logs: the mean over ranks
    if rank == 0:
        torch.save({"gradient": gradient / world, "loss": value / world}, out)
    torch.distributed.destroy_process_group()


def test_two_processes_of_eight_images_equal_one_of_sixteen(tmp_path):
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4).eval()
    images, targets, table = _group_case()
    loss = DistillationLoss(table).loss(model, images, targets)["loss_distill"]
    loss.backward()
    out = tmp_path / "ranks.pt"
    torch.multiprocessing.spawn(_two_process_gradient, args=(2, str(tmp_path / "init"), str(out)), nprocs=2)
    split = torch.load(out, weights_only=True)
    torch.testing.assert_close(split["loss"], loss.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(split["gradient"], model.roi_heads.box_head.fc7.weight.grad, rtol=1e-4, atol=1e-8)
