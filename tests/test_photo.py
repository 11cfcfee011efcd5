"""End to end on real photographs: config/coco_mini.yaml (COCO 2017 photos, ImageNet MobileNetV2) through
snakemake with a budget of a few iterations per step. Numbers are not meaningful; the files are checked."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
import pytest
import torch
import yaml
from workflow_copy import REPO, run_snakemake, workflow_copy

from lst.data import tables

SHARED = (REPO.parent / "shared" / "data").resolve()
COCO_MINI = SHARED / "coco-mini"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"
WEIGHTS_SHA256 = "9ce67c43c92ed4e9f615cdde0f71e04d70f01d485a3eaf867b59902b3decddc4"  # /work/shared/data/README.md
pytestmark = pytest.mark.skipif(
    not (COCO_MINI.is_dir() and WEIGHTS.is_file()),
    reason=f"real COCO photos or ImageNet weights not found under {SHARED} (../shared/data)",
)

# the preset's model and data, cut to seconds per step: smaller images, few iterations, few detections
TINY = [
    "train_base.iterations=4", "train_base.warmup_iters=1", "train_base.log_period=2",
    "train_phase.iterations=2", "train_phase.warmup_iters=1", "train_phase.log_period=1",
    "model.min_size=160", "model.max_size=256",
    "eval.max_dets=10", "eval.score_thresh=0", "eval.score_thresh_incremental=0",  # untrained: keep some anyway
]  # fmt: skip


def absolute(value):
    """The config's ../shared/data paths, resolved from the repository root (the test runs elsewhere)."""
    if isinstance(value, dict):
        return {key: absolute(item) for key, item in value.items()}
    return str((REPO / value).resolve()) if isinstance(value, str) and value.startswith("../") else value


def top_classes(train_json: Path, count: int) -> list[int]:
    """The ``count`` category ids with most non-crowd training instances (ties: smaller id first)."""
    annotations = json.loads(train_json.read_text())["annotations"]
    instances = Counter(a["category_id"] for a in annotations if not a["iscrowd"])
    return sorted(instances, key=lambda c: (-instances[c], c))[:count]


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    config = yaml.safe_load((REPO / "config" / "coco_mini.yaml").read_text())
    config["dataset"] = absolute(config["dataset"])
    config["backbone_weights"] = absolute(config["backbone_weights"])
    config["overrides"] = {"all": TINY}
    root = workflow_copy(tmp_path_factory.mktemp("photo"), **config)
    result = run_snakemake(root)
    return root, config, result


def test_config_runs_the_preset_on_coco_mini_in_place(photo_run):
    _, config, _ = photo_run
    assert config["preset"] == "photo_cpu" and set(config["methods"]) == {"joint", "finetune", "lst"}
    assert Path(config["dataset"]["train_json"]) == COCO_MINI / "annotations" / "instances_train2017.json"
    assert config["dataset"]["image_root"] == {s: str(COCO_MINI / f"{s}2017") for s in ("train", "val")}
    assert Path(config["backbone_weights"]) == WEIGHTS


def test_models_start_from_imagenet_and_learn_the_most_frequent_classes(photo_run):
    root, config, _ = photo_run
    results = root / "results" / config["dataset"]["name"]
    sizes = config["phases"]["sizes"]
    ranked = top_classes(COCO_MINI / "annotations" / "instances_train2017.json", sum(sizes))
    assert ranked[0] == 1  # person, coco-mini's head class
    base = torch.load(results / "seed0" / "base" / "phase0" / "model.pt", weights_only=True)
    assert base["category_ids"] == ranked[: sizes[0]]
    assert base["meta"]["backbone_weights"] == {"path": str(WEIGHTS), "sha256": WEIGHTS_SHA256}
    assert base["config"]["model"]["backbone"] == "mobilenet_v2_fpn"
    for method in ("finetune", "lst"):
        for phase in (1, 2):
            model = torch.load(results / "seed0" / method / f"phase{phase}" / "model.pt", weights_only=True)
            assert model["category_ids"] == ranked[: sum(sizes[: phase + 1])]
    joint = torch.load(results / "seed0" / "joint" / "phase2" / "model.pt", weights_only=True)
    assert joint["category_ids"] == ranked and joint["meta"]["backbone_weights"]["sha256"] == WEIGHTS_SHA256


def test_summary_has_every_method_and_phase(photo_run):
    root, config, result = photo_run
    results = root / "results" / config["dataset"]["name"]
    assert "summary written to results/coco_mini/summary.md" in result.stdout + result.stderr
    summary = tables.read_table(results / "summary.parquet", tables.SUMMARY)
    pairs = set(zip(summary["method"], summary["phase"], strict=True))
    assert pairs == {("base", 0), ("joint", 2)} | {(m, k) for m in ("finetune", "lst") for k in (1, 2)}
    ap = summary[summary["metric"] == "AP"]
    assert len(ap) == 2 * len(pairs) and set(ap["iou_type"]) == {"segm", "bbox"}
    assert ap["value"].between(0, 1).all()
    table = (results / "summary.md").read_text()
    assert all(f"| {method} |" in table for method in ("joint", "finetune", "lst"))


def test_detections_name_coco_minis_own_images_and_categories(photo_run):
    root, config, _ = photo_run
    results = root / "results" / config["dataset"]["name"]
    val = json.loads((COCO_MINI / "annotations" / "instances_val2017.json").read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in val["images"]}
    classes_of: dict[int, set[int]] = {}
    for a in val["annotations"]:
        classes_of.setdefault(a["image_id"], set()).add(a["category_id"])
    ranked = top_classes(COCO_MINI / "annotations" / "instances_train2017.json", sum(config["phases"]["sizes"]))
    for method, phase in (("base", 0), ("finetune", 1), ("lst", 2), ("joint", 2)):
        seen = set(ranked[: sum(config["phases"]["sizes"][: phase + 1])])
        folder = results / "seed0" / method / f"phase{phase}" / "eval"
        metrics = tables.read_table(folder / "metrics.parquet", tables.METRICS)
        for iou_type in ("segm", "bbox"):
            names = set(metrics.loc[metrics["iou_type"] == iou_type, "metric"])
            assert {"AP", "AP50", "APr", "APc"} | {f"AP_phase{j}" for j in range(phase + 1)} <= names
        per_class = tables.read_table(folder / "per_class.parquet", tables.PER_CLASS)
        assert set(per_class["category_id"]) == seen
        detections = tables.read_table(folder / "detections.parquet", tables.DETECTIONS)
        assert len(detections) > 0
        # the phase's val set: the val images holding one of its classes, by their COCO ids
        assert set(detections["image_id"]) <= {i for i, c in classes_of.items() if c & seen}
        assert set(detections["category_id"]) <= seen
        assert detections.groupby("image_id").size().max() <= 10  # eval.max_dets
        for row in detections.head(20).itertuples():
            height, width = sizes[row.image_id]
            mask = mask_utils.decode({"size": [height, width], "counts": row.rle_counts})
            assert mask.shape == (height, width)
            assert 0 <= row.x and row.x + row.w <= width + 0.01 and 0 <= row.y and row.y + row.h <= height + 0.01
        assert np.isfinite(detections["score"]).all() and pd.Series(detections["score"]).between(0, 1).all()
