"""COCO-format data as COCO ships it: exhaustive negatives, crowd regions, per-split image folders and ids
that restart in each split, through the steps; crowd handling of the evaluator against pycocotools' COCOeval.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
import pytest
from conftest import run_step
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from workflow_copy import run_snakemake, workflow_copy

from lst.cli.lst_eval import main as lst_eval
from lst.data import tables
from lst.data.phase_data import phase_data
from lst.data.phase_plan import frequency_of
from lst.data.sampling import replay_quotas
from lst.evaluation.inference import ground_truth
from lst.evaluation.lvis_eval import evaluate_lvis
from lst.testing import detection_frame, draw_images, write_lvis

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"


def counts_list(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a binary mask: column-major runs, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def crowd_annotation(ann_id: int, image_id: int, category_id: int, rects: list, height: int, width: int) -> dict:
    """A crowd region (``iscrowd: 1``) over the union of ``rects`` (x, y, w, h), as RLE in counts-list form."""
    mask = np.zeros((height, width), np.uint8)
    for x, y, w, h in rects:
        mask[y : y + h, x : x + w] = 1
    segmentation = {"size": [height, width], "counts": counts_list(mask)}
    rle = mask_utils.frPyObjects(segmentation, height, width)
    assert (mask_utils.decode(rle) == mask).all()
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 1,
            "segmentation": segmentation, "area": float(mask.sum()),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)]}  # fmt: skip


def box_annotation(ann_id: int, image_id: int, category_id: int, box: list[int]) -> dict:
    x, y, w, h = box
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "segmentation": [[float(v) for v in polygon]], "area": float(w * h),
            "bbox": [float(v) for v in box]}  # fmt: skip


# --------------------------------------------------------------------------- the evaluator against COCOeval


def _polygon(rng, width, height, lo=8, hi=120):
    w, h = rng.uniform(lo, min(hi, width - 4)), rng.uniform(lo, min(hi, height - 4))
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    j = rng.uniform(0, 0.2, 8) * np.tile([w, h], 4)
    points = [x + j[0], y + j[1], x + w - j[2], y + j[3], x + w - j[4], y + h - j[5], x + j[6], y + h - j[7]]
    return [float(v) for v in points]


def _jitter(rng, polygon, sigma, width, height):
    xs, ys = np.array(polygon[0::2]), np.array(polygon[1::2])
    size = max(np.ptp(xs), np.ptp(ys))
    xs = np.clip(xs + rng.normal(0, sigma * size, 4), 0, width)
    ys = np.clip(ys + rng.normal(0, sigma * size, 4), 0, height)
    return [float(v) for p in zip(xs, ys, strict=True) for v in p]


def coco_case(seed: int) -> tuple[dict, pd.DataFrame]:
    """A COCO ground truth with crowd regions (over instances of their class and on their own) and detections:
    jittered instances, detections inside crowd regions (several per region, of its class and others), false
    positives of classes present and absent. At most 100 detections per image, distinct scores."""
    rng = np.random.default_rng(seed)
    category_ids = [1, 2, 4, 7, 9, 12]
    images, annotations, detections = [], [], []
    for image_id in range(1, 8):
        width, height = (int(v) for v in rng.integers(180, 300, 2))
        images.append({"id": image_id, "width": width, "height": height})
        present = [int(c) for c in rng.choice(category_ids[:-1], size=int(rng.integers(1, 4)), replace=False)]
        for c in present:
            for _ in range(int(rng.integers(1, 4))):
                polygon = _polygon(rng, width, height)
                rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c, "iscrowd": 0,
                                    "segmentation": [polygon], "area": float(mask_utils.area(rle)),
                                    "bbox": [float(v) for v in mask_utils.toBbox(rle)]})  # fmt: skip
                for _ in range(int(rng.integers(0, 4))):
                    sigma = float(rng.choice([0.02, 0.08, 0.2]))
                    detections.append((image_id, c, _jitter(rng, polygon, sigma, width, height)))
        for _ in range(int(rng.integers(0, 3))):
            c = int(rng.choice(present)) if rng.random() < 0.7 else int(rng.choice(category_ids))
            x, y = (int(v) for v in rng.integers(0, [width - 60, height - 60]))
            rects = [
                [
                    x,
                    y,
                    int(rng.integers(30, 60)),
                    int(rng.integers(30, 60)),
                ]
            ]
            rects.append([x + 10, y + 10, int(rng.integers(20, 50)), int(rng.integers(20, 50))])
            annotations.append(crowd_annotation(len(annotations) + 1, image_id, c, rects, height, width))
            for _ in range(int(rng.integers(2, 6))):  # inside the region, or overlapping it
                w, h = (float(v) for v in rng.uniform(6, 30, 2))
                dx, dy = (float(v) for v in rng.uniform(-5, 40, 2))
                other = int(rng.choice(category_ids)) if rng.random() < 0.25 else c
                x0, y0, x1, y1 = x + dx, y + dy, x + dx + w, y + dy + h
                detections.append((image_id, other, [x0, y0, x1, y0, x1, y1, x0, y1]))
        for _ in range(int(rng.integers(3, 12))):
            detections.append((image_id, int(rng.choice(category_ids)), _polygon(rng, width, height)))
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    rows = []
    for image_id, c, polygon in detections:
        height, width = sizes[image_id]
        polygon = [float(np.clip(v, 0, width if k % 2 == 0 else height)) for k, v in enumerate(polygon)]
        rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
        x0, y0, x1, y1 = min(polygon[0::2]), min(polygon[1::2]), max(polygon[0::2]), max(polygon[1::2])
        rows.append((image_id, c, x0, y0, x1 - x0, y1 - y0, rle["counts"]))
    assert max(np.bincount([r[0] for r in rows])) <= 100
    dets = detection_frame(rows, (rng.permutation(len(rows)) + 1).astype(np.float32) / len(rows))
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": f"c{c}", "supercategory": "s"} for c in category_ids]}  # fmt: skip
    return gt, dets


def as_lvis(gt: dict) -> dict:
    """The COCO ground truth under LVIS rules that reduce to COCO's: every absent category is a negative."""
    annotated: dict[int, set[int]] = {}
    for ann in gt["annotations"]:
        annotated.setdefault(ann["image_id"], set()).add(ann["category_id"])
    category_ids = [c["id"] for c in gt["categories"]]
    images = [dict(image, neg_category_ids=[c for c in category_ids if c not in annotated.get(image["id"], set())],
                   not_exhaustive_category_ids=[]) for image in gt["images"]]  # fmt: skip
    categories = [dict(c, frequency="rcf"[i % 3]) for i, c in enumerate(gt["categories"])]
    return {"images": images, "annotations": gt["annotations"], "categories": categories}


def run_cocoeval(gt: dict, dets: pd.DataFrame, iou_type: str) -> COCOeval:
    truth = COCO()
    truth.dataset = json.loads(json.dumps(gt))
    truth.createIndex()
    results = []
    for row in dets.itertuples():
        result = {"image_id": int(row.image_id), "category_id": int(row.category_id), "score": float(row.score)}
        if iou_type == "bbox":
            result["bbox"] = [float(row.x), float(row.y), float(row.w), float(row.h)]
        else:  # no bbox: COCO sizes the result by its mask, as lst.evaluation.lvis_eval does
            height, width = next((i["height"], i["width"]) for i in gt["images"] if i["id"] == row.image_id)
            result["segmentation"] = {"size": [height, width], "counts": row.rle_counts.decode()}
        results.append(result)
    evaluation = COCOeval(truth, truth.loadRes(results), iou_type)
    evaluation.evaluate()
    evaluation.accumulate()
    return evaluation


def coco_metrics(evaluation: COCOeval) -> tuple[dict[str, float], np.ndarray]:
    """lst's metric keys from COCOeval's arrays at maxDets 100, and the per-class AP (NaN: no ground truth)."""
    precision, recall = evaluation.eval["precision"][..., 2], evaluation.eval["recall"][..., 2]

    def mean(values: np.ndarray) -> float:
        return float(values[values > -1].mean()) if (values > -1).any() else -1.0

    metrics = {"AP": mean(precision[..., 0]), "AP50": mean(precision[0, ..., 0]), "AP75": mean(precision[5, ..., 0])}
    for i, size in enumerate("sml", start=1):
        metrics[f"AP{size}"] = mean(precision[..., i])
        metrics[f"AR{size}@300"] = mean(recall[..., i])
    metrics["AR@300"] = mean(recall[..., 0])
    per_class = np.array([mean(precision[:, :, k, 0]) for k in range(precision.shape[2])])
    return metrics, np.where(per_class == -1, np.nan, per_class)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crowd_regions_are_evaluated_as_cocoeval_does(seed, iou_type):
    gt, dets = coco_case(seed)
    result = evaluate_lvis(as_lvis(gt), dets, iou_type, max_dets_per_image=300)
    expected, expected_per_class = coco_metrics(run_cocoeval(gt, dets, iou_type))
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-12), key
    np.testing.assert_allclose(result.per_class["ap"].to_numpy(), expected_per_class, atol=1e-12)
    crowd = sum(a["iscrowd"] for a in gt["annotations"])
    assert result.per_class["num_gt"].sum() == len(gt["annotations"]) - crowd
    # the case exercises the crowd rules: taking its regions for ordinary instances changes the numbers
    plain = as_lvis(gt)
    plain["annotations"] = [dict(a, iscrowd=0) for a in gt["annotations"]]
    assert evaluate_lvis(plain, dets, iou_type).metrics["AP"] != pytest.approx(result.metrics["AP"], abs=1e-6)


def test_several_detections_on_one_crowd_region_are_all_ignored():
    """COCO never uses a crowd region up, and measures a detection against it by the detection's own area."""
    image = {"id": 1, "width": 60, "height": 50, "neg_category_ids": [2], "not_exhaustive_category_ids": []}
    gt = {"images": [image],
          "annotations": [box_annotation(1, 1, 1, [2, 2, 10, 10]),
                          crowd_annotation(2, 1, 1, [[20, 10, 30, 30]], 50, 60)],
          "categories": [{"id": c, "name": f"c{c}", "frequency": "f"} for c in (1, 2)]}  # fmt: skip
    boxes = [[2, 2, 10, 10, 0.5], [22, 12, 6, 6, 0.9], [30, 20, 8, 8, 0.8], [21, 11, 5, 5, 0.7]]
    dets = pd.DataFrame(boxes, columns=["x", "y", "w", "h", "score"]).assign(image_id=1, category_id=1)
    result = evaluate_lvis(gt, dets, "bbox")
    assert result.metrics["AP"] == pytest.approx(
        1.0
    )  # the three on the crowd region are neither true nor false positives
    assert result.per_class["num_gt"].tolist() == [1, 0]


# --------------------------------------------------------------------------- COCO files through the steps

CATEGORIES = [{"id": c, "name": n, "supercategory": "thing"} for c, n in ((1, "a"), (2, "b"), (3, "c"), (5, "d"))]
TRAIN_SIZE, VAL_SIZE = (48, 40), (44, 36)  # (width, height): a val image read from train2017/ is caught


def _coco_file(size: tuple[int, int], objects: dict[int, list], crowds: dict[int, list]) -> dict:
    """COCO instances json: images 1..n with bare file names, annotation ids from 1, no LVIS field."""
    width, height = size
    images = [{"id": i, "width": width, "height": height, "file_name": f"{i:012d}.jpg", "license": 1,
               "coco_url": f"http://images.cocodataset.org/x2017/{i:012d}.jpg"} for i in sorted(objects)]  # fmt: skip
    annotations = []
    for image_id, boxes in objects.items():
        for category_id, box in boxes:
            annotations.append(box_annotation(len(annotations) + 1, image_id, category_id, box))
        for category_id, rects in crowds.get(image_id, []):
            annotations.append(crowd_annotation(len(annotations) + 1, image_id, category_id, rects, height, width))
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}


# per image: (category, box) instances; crowd regions apart. Without the crowd regions category 3 has 2
# instances (images 2, 5), with them 4 (and image 6, which holds a crowd region only).
TRAIN = _coco_file(
    TRAIN_SIZE,
    {1: [(1, [2, 2, 10, 8]), (1, [20, 4, 8, 8]), (2, [30, 20, 10, 10])], 2: [(1, [4, 4, 9, 9]), (3, [25, 15, 12, 12])],
     3: [(2, [5, 5, 14, 10]), (1, [28, 20, 10, 10])], 4: [(1, [3, 3, 10, 10]), (5, [26, 18, 12, 12])],
     5: [(2, [6, 6, 10, 10]), (3, [24, 20, 10, 12])], 6: []},
    {2: [(1, [[2, 20, 16, 14]])], 5: [(3, [[30, 2, 14, 12]])], 6: [(3, [[10, 10, 20, 20], [15, 5, 10, 10]])]},
)  # fmt: skip
VAL = _coco_file(
    VAL_SIZE,
    {1: [(1, [2, 2, 10, 10]), (2, [24, 16, 12, 12])], 2: [(3, [2, 2, 12, 10])],
     3: [(5, [4, 4, 10, 10]), (1, [24, 14, 12, 12])], 4: [(2, [10, 8, 14, 14])]},
    {2: [(1, [[20, 10, 20, 20]])]},
)  # fmt: skip


def _colour(image: dict) -> tuple[int, int, int]:
    return (40 * image["id"], 90, 160)


def roots_override(roots: dict[str, Path]) -> str:
    return f"dataset.image_root={{train:'{roots['train']}',val:'{roots['val']}'}}"


@pytest.fixture(scope="module")
def coco_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    paths = {"root": root, "roots": {"train": root / "train2017", "val": root / "val2017"}}
    for split, data in (("train", TRAIN), ("val", VAL)):
        paths[split] = root / "annotations" / f"instances_{split}2017.json"
        write_lvis(paths[split], data)
        draw_images(paths["roots"][split], data, _colour)
    return paths


@pytest.fixture(scope="module")
def prepared(coco_files, tmp_path_factory) -> dict:
    """prepare_data, check_data and split (2 + 2 classes) on the generated files."""
    out = tmp_path_factory.mktemp("results")
    data_dir, split_dir = out / "data", out / "split"
    data = [f"dataset.train_json={coco_files['train']}", f"dataset.val_json={coco_files['val']}"]
    assert run_step("prepare_data", *data, f"paths.data_dir={data_dir}", f"hydra.run.dir={data_dir}") == 0
    check = [f"paths.data_dir={data_dir}", f"paths.report={data_dir / 'check.md'}", f"hydra.run.dir={data_dir}"]
    assert run_step("check_data", *check, roots_override(coco_files["roots"])) == 0
    split = [f"paths.data_dir={data_dir}", f"paths.split_dir={split_dir}", f"hydra.run.dir={split_dir}"]
    assert run_step("split", *split, "phases.sizes=[2,2]") == 0
    return {"out": out, "data_dir": data_dir, "split_dir": split_dir, "check": check, **coco_files}


def test_coco_files_become_exhaustive_tables_with_crowd_flags(prepared):
    images = tables.read_table(prepared["data_dir"] / "images.parquet", tables.IMAGES)
    assert images["split"].tolist() == ["train"] * 6 + ["val"] * 4
    assert images["image_id"].tolist() == [1, 2, 3, 4, 5, 6, 1, 2, 3, 4]  # each file numbers from 1
    assert (images["file_name"] == images["image_id"].map("{:012d}.jpg".format)).all()
    annotations = tables.read_table(prepared["data_dir"] / "annotations.parquet", tables.ANNOTATIONS)
    for split, data in (("train", TRAIN), ("val", VAL)):
        ours = annotations[annotations["split"] == split]
        assert ours["annotation_id"].tolist() == [a["id"] for a in data["annotations"]]
        assert ours["iscrowd"].tolist() == [bool(a["iscrowd"]) for a in data["annotations"]]
        # every category not annotated on an image (crowd regions count as annotated) is a negative of it
        annotated = ours.groupby("image_id")["category_id"].agg(set)
        for row in images[images["split"] == split].itertuples():
            expected = [c["id"] for c in CATEGORIES if c["id"] not in annotated.get(row.image_id, set())]
            assert row.neg_category_ids.tolist() == expected
            assert row.not_exhaustive_category_ids.tolist() == []
    assert "images checked: 10" in (prepared["data_dir"] / "check.md").read_text()


def test_check_data_reads_each_split_from_its_own_folder(prepared, capfd):
    roots = prepared["roots"]
    # one folder for both (today's layout) still works where the images are there ...
    merged = prepared["root"] / "merged"
    draw_images(merged, TRAIN, _colour)
    report = f"paths.report={prepared['out'] / 'merged.md'}"
    assert run_step("check_data", *prepared["check"][:1], report, f"hydra.run.dir={prepared['out']}",
                    f"dataset.image_root={merged}") == 1  # fmt: skip
    assert "of another size than the annotations say" in capfd.readouterr().out  # val images are 44x36
    # ... and swapped folders are caught
    swapped = {"train": roots["val"], "val": roots["train"]}
    assert run_step("check_data", *prepared["check"][:1], report, f"hydra.run.dir={prepared['out']}",
                    roots_override(swapped)) == 1  # fmt: skip
    out = capfd.readouterr().out
    assert f"the images under train: {roots['val']}, val: {roots['train']}" in out
    assert not (prepared["out"] / "merged.md").exists()
    assert run_step("check_data", *prepared["check"][:1], report, f"hydra.run.dir={prepared['out']}",
                    "dataset.image_root={train:'a'}") == 1  # fmt: skip
    assert "dataset.image_root: give one folder, or one folder for each of train and val" in capfd.readouterr().out


def test_split_counts_no_crowd_region(prepared):
    split = tables.read_table(prepared["split_dir"] / "categories.parquet", tables.PHASE_PLAN)
    assert split["category_id"].tolist() == [1, 2, 3, 5]  # with the crowd regions 3 (4 "instances") would lead 2
    assert split["instance_count"].tolist() == [5, 3, 2, 1]
    assert split["image_count"].tolist() == [4, 3, 2, 1]
    assert split["frequency"].tolist() == frequency_of(split["image_count"].to_numpy()).tolist() == ["r"] * 4
    membership = tables.read_table(prepared["split_dir"] / "images.parquet", tables.PHASE_PLAN_IMAGES)
    first = {(r.split, r.image_id): r.first_phase for r in membership.itertuples()}
    assert first[("train", 6)] is pd.NA  # a crowd region only: in no phase's training set
    assert first[("train", 2)] == 0 and first[("val", 2)] == 1  # same id, two images: val 2 holds class 3 only
    assert [first[("val", i)] for i in (1, 3, 4)] == [0, 0, 0]
    phases = tables.read_table(prepared["split_dir"] / "phases.parquet", tables.PHASES)
    assert phases["train_images"].tolist() == [5, 5] and phases["val_images"].tolist() == [3, 4]
    assert phases["val_instances"].tolist() == [4, 2]  # the val crowd region is not an instance


def test_replay_draws_no_crowd_region(prepared):
    out = prepared["out"] / "replay.parquet"
    assert run_step(
        "build_replay", f"paths.data_dir={prepared['data_dir']}", f"paths.split_dir={prepared['split_dir']}",
        f"paths.replay={out}", "phase=1", "method=lst", "train_phase.iterations=40", "train_phase.batch_size=2",
        f"hydra.run.dir={prepared['out']}",
    ) == 0  # fmt: skip
    stream = tables.read_table(out, tables.REPLAY)
    pairs = set(zip(stream["image_id"], stream["category_id"], strict=True))
    assert {p for p in pairs if p[1] in (3, 5)} == {(2, 3), (5, 3), (4, 5)}  # not (6, 3): a crowd region only
    assert {p[0] for p in pairs if p[1] == 1} <= {1, 2, 3, 4} and {p[0] for p in pairs if p[1] == 2} <= {1, 3, 5}
    split = tables.read_table(prepared["split_dir"] / "categories.parquet", tables.PHASE_PLAN)
    # m = 1.5 new instances per class; class 1: 5 instances on 4 images -> 1; class 2: 3 on 3 -> 2 (half up)
    assert replay_quotas(split, 1)["quota"].tolist() == [1, 2]


def test_evaluation_ignores_crowd_regions_and_counts_negatives(prepared):
    split = tables.read_table(prepared["split_dir"] / "categories.parquet", tables.PHASE_PLAN)
    data = phase_data(
        prepared["data_dir"], prepared["split_dir"], 1, "val", {k: str(v) for k, v in prepared["roots"].items()}
    )
    assert data.image_ids().tolist() == [1, 2, 3, 4]
    image, target = data.load(2)  # val image 2, from val2017/
    assert tuple(image.shape[1:]) == (VAL_SIZE[1], VAL_SIZE[0])
    assert target["annotation_ids"].tolist() == [3]  # its crowd region (annotation 4) is no target
    assert data.crowd["annotation_id"].tolist() == [4] and not data.annotations["iscrowd"].any()
    gt = ground_truth(data.images.reset_index(drop=True), pd.concat([data.annotations, data.crowd]), split)
    assert [i["neg_category_ids"] for i in gt["images"]] == [[3, 5], [2, 5], [2, 3], [1, 3, 5]]
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 0, 0, 0, 0, 0, 1]
    # perfect detections, two on the crowd region of class 1 (first in score), one of class 2 on image 2,
    # where class 2 is a negative
    rows = [(a["image_id"], a["category_id"], *a["bbox"], 0.9) for a in gt["annotations"] if not a["iscrowd"]]
    rows += [(2, 1, 22, 12, 6, 6, 0.95), (2, 1, 30, 20, 5, 8, 0.94), (2, 2, 2, 2, 12, 10, 0.99)]
    dets = pd.DataFrame(rows, columns=["image_id", "category_id", "x", "y", "w", "h", "score"])
    per_class = evaluate_lvis(gt, dets, "bbox").per_class.set_index("category_id")["ap"]
    assert per_class[1] == pytest.approx(1.0)  # the crowd region's detections are neither true nor false positives
    assert per_class[2] == pytest.approx(2 / 3)  # the false positive on image 2 counts: class 2 is negative there
    assert per_class[[3, 5]].tolist() == pytest.approx([1.0, 1.0])


def test_evaluate_step_names_the_val_files_own_ids(prepared, tmp_path, capsys):
    """detections.parquet and the results json exported from it name val's image ids, with val's sizes."""
    import torch
    import yaml

    from lst.modeling.checkpoint import save_checkpoint
    from lst.modeling.mask_rcnn import build_model

    model_cfg = yaml.safe_load((REPO / "src/lst/conf/model/small.yaml").read_text())
    torch.manual_seed(0)
    model = build_model(model_cfg, num_classes=3)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint({"model": model.state_dict(), "category_ids": [1, 2], "config": {"model": model_cfg}}, checkpoint)
    out = tmp_path / "eval"
    assert run_step(
        "evaluate", f"paths.data_dir={prepared['data_dir']}", f"paths.split_dir={prepared['split_dir']}",
        roots_override(prepared["roots"]), f"paths.model={checkpoint}", f"paths.out_dir={out}",
            f"paths.gallery={out}/gallery.png", "phase=0",
        "eval.score_thresh=0.0", "eval.max_dets=20", f"hydra.run.dir={out}",
    ) == 0  # fmt: skip
    detections = tables.read_table(out / "detections.parquet", tables.DETECTIONS)
    assert set(detections["image_id"]) == {1, 3, 4}  # phase 0's val images (val 2 holds class 3 only)
    assert "| a |" in (out / "metrics.md").read_text()
    exported = tmp_path / "results.json"
    assert lst_eval(["--gt", str(prepared["val"]), "--dets", str(out / "detections.parquet"),
                     "--export-json", str(exported)]) == 0  # fmt: skip
    records = json.loads(exported.read_text())
    assert len(records) == len(detections)
    assert {tuple(r["segmentation"]["size"]) for r in records} == {(VAL_SIZE[1], VAL_SIZE[0])}


def test_snakemake_passes_per_split_image_folders(coco_files, tmp_path):
    """The config schema takes {train: DIR, val: DIR}; the rules hand it to Hydra quoted (a comma, a colon)."""
    roots = {split: tmp_path / f"images: {split}, 2017" for split in ("train", "val")}
    for split, data in (("train", TRAIN), ("val", VAL)):
        draw_images(roots[split], data, _colour)
    dataset = {"name": "cocogen", "train_json": str(coco_files["train"]), "val_json": str(coco_files["val"]),
               "image_root": {k: str(v) for k, v in roots.items()}}  # fmt: skip
    root = workflow_copy(tmp_path / "wf", preset="tiny", dataset=dataset, phases={"sizes": [2, 2]}, methods=["lst"])
    run_snakemake(root, "results/cocogen/data/check.md", "results/cocogen/seed0/lst/phase1/replay.parquet")
    assert "images checked: 10" in (root / "results/cocogen/data/check.md").read_text()
    assert (root / "results/cocogen/seed0/lst/phase1/replay.parquet").is_file()


# --------------------------------------------------------------------------- the real coco-mini, in place


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"real COCO data not found at {COCO_MINI} (../shared/data)")
def test_real_coco_mini_in_place(tmp_path):
    """COCO 2017's own json and folders, no merged image folder: 8 crowd regions kept out of the training
    counts, and the evaluation's ground truth lists every absent category as a negative."""
    data_dir, split_dir = tmp_path / "data", tmp_path / "split"
    files = {s: COCO_MINI / "annotations" / f"instances_{s}2017.json" for s in ("train", "val")}
    roots = {s: COCO_MINI / f"{s}2017" for s in ("train", "val")}
    assert run_step("prepare_data", f"dataset.train_json={files['train']}", f"dataset.val_json={files['val']}",
                    f"paths.data_dir={data_dir}", f"hydra.run.dir={data_dir}") == 0  # fmt: skip
    assert run_step("check_data", f"paths.data_dir={data_dir}", f"paths.report={data_dir / 'check.md'}",
                    roots_override(roots), f"hydra.run.dir={data_dir}") == 0  # fmt: skip
    assert run_step("split", f"paths.data_dir={data_dir}", f"paths.split_dir={split_dir}", "phases.sizes=[40,40]",
                    f"hydra.run.dir={split_dir}") == 0  # fmt: skip

    annotations = tables.read_table(data_dir / "annotations.parquet", tables.ANNOTATIONS)
    assert annotations.groupby("split")["iscrowd"].sum().to_dict() == {"train": 8, "val": 5}
    train = json.loads(files["train"].read_text())["annotations"]
    instances = pd.DataFrame([(a["category_id"], a["image_id"]) for a in train if not a["iscrowd"]],
                             columns=["category_id", "image_id"])  # fmt: skip
    split = tables.read_table(split_dir / "categories.parquet", tables.PHASE_PLAN).set_index("category_id")
    assert split["instance_count"].sum() == 739 - 8
    assert split.loc[1, "instance_count"] == 167  # person: 172 with its 5 crowd regions
    counts = instances.groupby("category_id").agg(n=("image_id", "size"), images=("image_id", "nunique"))
    assert split.loc[counts.index, "instance_count"].tolist() == counts["n"].tolist()
    assert split.loc[counts.index, "image_count"].tolist() == counts["images"].tolist()
    assert split["frequency"].tolist() == frequency_of(split["image_count"].to_numpy()).tolist()

    seen = split.reset_index()
    data = phase_data(data_dir, split_dir, 1, "val", {k: str(v) for k, v in roots.items()}, with_masks=False)
    gt = ground_truth(data.images.reset_index(drop=True), pd.concat([data.annotations, data.crowd]), seen)
    val = json.loads(files["val"].read_text())
    annotated: dict[int, set[int]] = {}
    for a in val["annotations"]:
        annotated.setdefault(a["image_id"], set()).add(a["category_id"])
    all_ids = {c["id"] for c in val["categories"]}
    assert len(gt["images"]) == 79
    for image in gt["images"]:
        assert set(image["neg_category_ids"]) == all_ids - annotated[image["id"]]
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 5
    # a detection of a category absent from an image is a false positive there, not ignored
    rows = [(a["image_id"], a["category_id"], *a["bbox"], 0.5) for a in gt["annotations"] if not a["iscrowd"]]
    image = gt["images"][0]
    absent = next(
        c for c in sorted(all_ids - annotated[image["id"]]) if c in {a["category_id"] for a in gt["annotations"]}
    )
    rows.append((image["id"], absent, 0.0, 0.0, 20.0, 20.0, 0.9))
    dets = pd.DataFrame(rows, columns=["image_id", "category_id", "x", "y", "w", "h", "score"])
    per_class = evaluate_lvis(gt, dets, "bbox").per_class.set_index("category_id")["ap"]
    assert per_class[absent] < 1.0
    assert per_class.drop(absent).dropna().tolist() == pytest.approx([1.0] * len(per_class.drop(absent).dropna()))
