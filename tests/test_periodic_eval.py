import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL
from PIL import Image

from lst.data.dataset import DetectionData
from lst.evaluation.inference import detect, ground_truth
from lst.evaluation.periodic_eval import PeriodicEvaluation, read_curve
from lst.evaluation.phase_metrics import phase_metrics
from lst.modeling.mask_rcnn import build_model

EVAL = {"score_thresh": 0.05, "score_thresh_incremental": 0.0, "max_dets": 300, "batch_size": 2, "amp": "off"}


@pytest.fixture
def val_data(tmp_path):
    rng = np.random.default_rng(1)
    images, annotations = [], []
    for image_id in range(1, 5):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{image_id}.png")
        images.append({"image_id": image_id, "width": 40, "height": 40, "file_name": f"{image_id}.png",
                       "neg_category_ids": [], "not_exhaustive_category_ids": []})  # fmt: skip
        x, y = (int(v) for v in rng.integers(2, 15, size=2))
        annotations.append(
            {"annotation_id": image_id, "image_id": image_id, "category_id": 1 + image_id % 2, "x": x, "y": y,
             "w": 16.0, "h": 16.0, "area": 256.0,
             "segmentation": str([[x, y, x + 16, y, x + 16, y + 16, x, y + 16]])}
        )  # fmt: skip
    seen = pd.DataFrame(
        {"category_id": [2, 1], "name": ["b", "a"], "frequency": ["r", "r"], "phase": [0, 1],
         "instance_count": [40, 3]}
    )  # fmt: skip
    data = DetectionData(pd.DataFrame(images), pd.DataFrame(annotations), seen, tmp_path, with_masks=False)
    return data, seen


def test_curve_equals_the_evaluation_of_the_model_and_training_state_is_kept(val_data, tmp_path):
    data, seen = val_data
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=3)
    model.train()
    model.backbone.body.eval()  # as training keeps frozen stages
    thresh, cap = model.roi_heads.score_thresh, model.roi_heads.detections_per_img
    hook = PeriodicEvaluation(data, seen, phase=1, period=2, eval_cfg=EVAL, curve_path=tmp_path / "curve.parquet",
                              tensorboard_dir=tmp_path / "tb")  # fmt: skip
    for iteration in (1, 2, 3, 4):
        hook(iteration, model)

    curve = read_curve(tmp_path / "curve.parquet")
    assert sorted(set(curve["iteration"])) == [2, 4]
    assert model.training and not model.backbone.body.training
    assert (model.roi_heads.score_thresh, model.roi_heads.detections_per_img) == (thresh, cap)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

    # the reference: what the evaluate step computes for this model
    model.roi_heads.score_thresh = EVAL["score_thresh_incremental"]
    detections = detect(model, data, batch_size=2)
    gt = ground_truth(data.images.reset_index(drop=True), data.annotations, seen)
    expected, _ = phase_metrics(gt, detections, seen, 1, max_dets_per_image=300)
    at_4 = curve[curve["iteration"] == 4].drop(columns="iteration").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        at_4.sort_values(["iou_type", "metric"]).reset_index(drop=True),
        expected.sort_values(["iou_type", "metric"]).reset_index(drop=True),
    )
    assert {"AP", "APr", "AP_phase0", "AP_phase1", "AP<10", "AP10-100"} <= set(at_4["metric"])


def test_an_iteration_run_again_after_a_resume_replaces_its_rows(val_data, tmp_path):
    data, seen = val_data
    model = build_model(SMALL, num_classes=3)
    hook = PeriodicEvaluation(data, seen, phase=0, period=1, eval_cfg=EVAL, curve_path=tmp_path / "c.parquet")
    for iteration in (1, 2, 3, 2, 3):  # killed after 3, resumed from a checkpoint at 1
        hook(iteration, model)
    curve = read_curve(tmp_path / "c.parquet")
    assert curve.groupby("iteration").size().to_dict() == {1: len(curve) // 3, 2: len(curve) // 3, 3: len(curve) // 3}


def test_period_zero_evaluates_nothing(val_data, tmp_path):
    data, seen = val_data
    hook = PeriodicEvaluation(data, seen, phase=0, period=0, eval_cfg=EVAL, curve_path=tmp_path / "c.parquet")
    hook(5, build_model(SMALL, num_classes=3))
    assert not (tmp_path / "c.parquet").exists()
