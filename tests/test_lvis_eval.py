"""lst.evaluation.lvis_eval against lvis-api (lvis 0.5.3) itself, on randomized federated cases."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
import pytest

from lst.cli.lst_eval import main
from lst.evaluation import lvis_match
from lst.evaluation.lvis_eval import (
    FIXED_AP_DETS_PER_CLASS,
    METRIC_KEYS,
    EvalResult,
    evaluate_lvis,
    export_lvis_results,
    image_sizes,
    load_detections,
    mean_ap,
)
from lst.testing import detection_frame, lvis_results

lvis = pytest.importorskip("lvis")
from lvis import LVIS, LVISEval, LVISResults  # noqa: E402

SEEDS = (0, 1, 2, 3)
SIZE_BUCKETS = {"small": (6, 28), "medium": (36, 90), "large": (100, 190)}


@pytest.fixture
def lvis_np2(monkeypatch):
    """lvis 0.5.3's accumulate() uses ``np.float``, gone in numpy 2 (test-only workaround)."""
    monkeypatch.setattr(np, "float", float, raising=False)


# --------------------------------------------------------------------------- random cases


def _quad(rng, cx, cy, w, h, W, H):
    """A random convex-ish quadrilateral roughly filling the box centred at (cx, cy), clipped to the image."""
    x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    j = rng.uniform(0, 0.25, size=8)
    pts = [
        (x0 + j[0] * w, y0 + j[1] * h),
        (x1 - j[2] * w, y0 + j[3] * h),
        (x1 - j[4] * w, y1 - j[5] * h),
        (x0 + j[6] * w, y1 - j[7] * h),
    ]
    return [float(np.clip(v, 0, lim)) for p in pts for v, lim in zip(p, (W, H), strict=True)]


def _random_shape(rng, W, H, buckets):
    bucket = buckets[rng.integers(len(buckets))]
    lo, hi = SIZE_BUCKETS[bucket]
    hi = min(hi, min(W, H) - 4)
    w, h = rng.uniform(lo, hi, size=2)
    cx, cy = rng.uniform(w / 2, W - w / 2), rng.uniform(h / 2, H - h / 2)
    return _quad(rng, cx, cy, w, h, W, H)


def _jitter(rng, poly, sigma, W, H):
    xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
    size = max(np.ptp(xs), np.ptp(ys), 1.0)
    xs = np.clip(xs + rng.normal(0, sigma * size, 4), 0, W)
    ys = np.clip(ys + rng.normal(0, sigma * size, 4), 0, H)
    return [float(v) for p in zip(xs, ys, strict=True) for v in p]


def _rle(poly, H, W):
    return mask_utils.merge(mask_utils.frPyObjects([poly], H, W))


def make_case(seed: int, ties: bool = False, buckets=("small", "medium", "large"), freqs=("r", "c", "f")):
    """GT dict and detection frame (bbox and segm columns) exercising every federated rule."""
    rng = np.random.default_rng(seed)
    n_img, n_cat = 7, 12
    cat_ids = [3 * i + 2 for i in range(n_cat)]  # non-contiguous ids
    categories = [{"id": c, "name": f"c{c}", "frequency": freqs[i % len(freqs)]} for i, c in enumerate(cat_ids)]
    no_gt_cats = set(cat_ids[-2:])  # never annotated: AP NaN, excluded from the means
    gt_cats = [c for c in cat_ids if c not in no_gt_cats]

    images, anns, rows = [], [], []
    for i in range(n_img):
        img_id = 100 + 7 * i
        W, H = (int(v) for v in rng.integers(200, 320, size=2))
        pos = [] if i == 0 else list(rng.choice(gt_cats, size=int(rng.integers(1, 4)), replace=False))
        others = [c for c in cat_ids if c not in pos]
        neg = [int(c) for c in rng.choice(others, size=int(rng.integers(1, 4)), replace=False)]
        nel = [int(c) for c in pos if rng.random() < 0.4]
        images.append(
            {
                "id": img_id,
                "height": H,
                "width": W,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": nel,
            }
        )
        heavy = i in (1, 2)  # more than 300 detections on these images
        for c in pos:
            for _ in range(int(rng.integers(1, 5))):
                poly = _random_shape(rng, W, H, buckets)
                rle = _rle(poly, H, W)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": img_id,
                        "category_id": int(c),
                        "segmentation": [poly],
                        "area": float(mask_utils.area(rle)),
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    }
                )
                for _ in range(int(rng.integers(0, 4 if not heavy else 12))):
                    sigma = rng.choice([0.01, 0.05, 0.12, 0.3])
                    rows.append((img_id, int(c), _jitter(rng, poly, sigma, W, H), W, H))
        n_fp = int(rng.integers(5, 25)) if not heavy else int(rng.integers(320, 380))
        for _ in range(n_fp):
            # mostly classes that are evaluated on this image (pos / neg), some that are not
            pool = pos + neg if (pos + neg and rng.random() < 0.8) else cat_ids
            c = int(rng.choice(pool))
            rows.append((img_id, c, _random_shape(rng, W, H, buckets), W, H))

    order = rng.permutation(len(rows))
    recs = []
    for k in order:
        img_id, c, poly, W, H = rows[k]
        rle = _rle(poly, H, W)
        x0, y0 = min(poly[0::2]), min(poly[1::2])
        x1, y1 = max(poly[0::2]), max(poly[1::2])
        recs.append((img_id, c, x0, y0, x1 - x0, y1 - y0, rle["counts"]))
    score = rng.uniform(0.01, 1.0, size=len(recs))
    if ties:
        score = np.round(score * 20) / 20
    dets = detection_frame(recs, score)
    gt = {"images": images, "annotations": anns, "categories": categories}
    return gt, dets


def run_lvis_api(tmp_path, gt: dict, results: list[dict], iou_type: str, max_dets: int = 300) -> LVISEval:
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    lvis_gt = LVIS(str(gt_path))
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, results, max_dets=max_dets), iou_type)
    ev.run()
    return ev


def assert_matches_lvis_api(res: EvalResult, ev: LVISEval, gt: dict) -> None:
    ref = ev.get_results()
    assert list(res.metrics) == list(METRIC_KEYS) == list(ref)
    for k in METRIC_KEYS:
        assert res.metrics[k] == pytest.approx(float(ref[k]), abs=1e-6), k

    # per-class AP as lvis-api's precision array averages it, and which classes count
    prec = ev.eval["precision"][:, :, :, 0]
    cat_ids = sorted(c["id"] for c in gt["categories"])
    assert res.per_class["category_id"].tolist() == cat_ids
    for k, c in enumerate(cat_ids):
        s = prec[:, :, k]
        got = res.per_class["ap"].iloc[k]
        if (s > -1).any():
            assert got == pytest.approx(float(s[s > -1].mean()), abs=1e-6), c
        else:
            assert np.isnan(got), c
    num_dets = pd.Series([c for (_, c), d in ev._dts.items() for _ in d]).value_counts()
    assert res.per_class["num_dets"].tolist() == [int(num_dets.get(c, 0)) for c in cat_ids]
    num_gt = pd.Series([a["category_id"] for a in gt["annotations"]]).value_counts()
    assert res.per_class["num_gt"].tolist() == [int(num_gt.get(c, 0)) for c in cat_ids]


# --------------------------------------------------------------------------- against lvis-api


def test_random_case_exercises_the_rules():
    gt, dets = make_case(0)
    per_img = dets.groupby("image_id").size()
    assert (per_img > 300).sum() >= 2
    assert any(not [a for a in gt["annotations"] if a["image_id"] == img["id"]] for img in gt["images"])
    assert all(img["neg_category_ids"] for img in gt["images"])
    assert any(img["not_exhaustive_category_ids"] for img in gt["images"])
    areas = np.array([a["area"] for a in gt["annotations"]])
    assert (areas < 32**2).any() and ((areas > 32**2) & (areas < 96**2)).any() and (areas > 96**2).any()
    annotated = {a["category_id"] for a in gt["annotations"]}
    assert set(c["id"] for c in gt["categories"]) - annotated  # classes without GT


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_lvis_api(lvis_np2, tmp_path, seed, iou_type):
    kwargs = {}
    if seed == 2:
        kwargs = {"ties": True}  # many equal scores, also at the 300 cut
    if seed == 3:
        kwargs = {"buckets": ("small", "medium"), "freqs": ("c", "f")}  # APl, ARl, APr are -1
    gt, dets = make_case(seed, **kwargs)
    if seed == 1:  # a class with GT but no detection at all
        dets = dets[dets["category_id"] != gt["annotations"][0]["category_id"]].reset_index(drop=True)
    gt_before = copy.deepcopy(gt)
    dets_before = dets.copy()

    res = evaluate_lvis(gt, dets, iou_type)

    assert gt == gt_before  # not mutated
    pd.testing.assert_frame_equal(dets, dets_before)
    ev = run_lvis_api(tmp_path, gt, lvis_results(gt, dets, iou_type), iou_type)
    assert_matches_lvis_api(res, ev, gt)
    if seed == 3:
        assert res.metrics["APl"] == -1.0 and res.metrics["APr"] == -1.0
    assert ((res.per_class["num_gt"] > 0) == res.per_class["ap"].notna()).all()

    # mean_ap reproduces the summary APs
    pc = res.per_class
    assert mean_ap(pc, pc["category_id"]) == pytest.approx(res.metrics["AP"], abs=1e-12)
    for f in "rcf":
        ids = [c["id"] for c in gt["categories"] if c["frequency"] == f]
        assert mean_ap(pc, ids) == pytest.approx(res.metrics[f"AP{f}"], abs=1e-12)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_other_max_dets_matches_lvis_api(lvis_np2, tmp_path, iou_type):
    gt, dets = make_case(4)
    res = evaluate_lvis(gt, dets, iou_type, max_dets_per_image=40)
    ev = run_lvis_api(tmp_path, gt, lvis_results(gt, dets, iou_type), iou_type, max_dets=40)
    assert_matches_lvis_api(res, ev, gt)
    assert res.metrics != evaluate_lvis(gt, dets, iou_type).metrics


def make_crowded_case(seed: int):
    """Clusters of overlapping ground truth of one class (duplicated boxes: equal IoUs), detections that
    compete for them, equal scores, ground truth with an ``ignore`` flag or area 0, detections of area 0."""
    rng = np.random.default_rng(seed)
    cat_ids = [5, 9, 14, 20]
    categories = [{"id": c, "name": f"c{c}", "frequency": f} for c, f in zip(cat_ids, "rcff", strict=True)]
    images, anns, rows = [], [], []
    for i in range(12):
        img_id = 1000 + i
        W, H = 240, 200
        pos = [int(c) for c in rng.choice(cat_ids[:3], size=2, replace=False)]
        neg = [c for c in cat_ids if c not in pos][:1]
        images.append(
            {
                "id": img_id,
                "height": H,
                "width": W,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": pos[:1] if i % 3 == 0 else [],
            }
        )
        for c in pos:
            cx, cy = rng.uniform(60, 180), rng.uniform(50, 150)
            size = rng.choice([20.0, 50.0, 110.0])
            for j in range(int(rng.integers(3, 9))):
                if j > 0 and rng.random() < 0.3:
                    poly = list(anns[-1]["segmentation"][0])  # the same object annotated twice: equal IoUs
                else:
                    w, h = size * rng.uniform(0.7, 1.3, size=2)
                    x0 = float(np.clip(cx - w / 2 + rng.normal(0, size / 6), 0, W - w))
                    y0 = float(np.clip(cy - h / 2 + rng.normal(0, size / 6), 0, H - h))
                    poly = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
                rle = _rle(poly, H, W)
                area = float(mask_utils.area(rle)) if rng.random() > 0.08 else 0.0  # area 0: lvis-api skips it
                ann = {
                    "id": 7 * len(anns) + 3,
                    "image_id": img_id,
                    "category_id": c,
                    "segmentation": [poly],
                    "area": area,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                }
                if rng.random() < 0.15:
                    ann["ignore"] = 1
                anns.append(ann)
                for _ in range(int(rng.integers(1, 4))):
                    rows.append((img_id, c, _jitter(rng, poly, rng.choice([0.0, 0.03, 0.1]), W, H)))
            for _ in range(4):
                rows.append((img_id, int(rng.choice(cat_ids)), _random_shape(rng, W, H, ("small", "medium"))))
    recs = []
    for img_id, c, poly in rows:
        H, W = 200, 240
        rle = _rle(poly, H, W)
        x0, y0 = min(poly[0::2]), min(poly[1::2])
        w, h = max(poly[0::2]) - x0, max(poly[1::2]) - y0
        if rng.random() < 0.03:
            w = 0.0  # a degenerate box: area 0, skipped by lvis-api
        recs.append((img_id, c, x0, y0, w, h, rle["counts"]))
    score = np.round(rng.uniform(0, 1, size=len(recs)) * 8) / 8  # many equal scores
    dets = detection_frame(recs, score)
    # a few exact duplicates of detections
    dets = pd.concat([dets, dets.iloc[: len(dets) // 10]], ignore_index=True)
    return {"images": images, "annotations": anns, "categories": categories}, dets


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crowded_case_matches_lvis_api(lvis_np2, tmp_path, seed, iou_type):
    gt, dets = make_crowded_case(seed)
    assert any(a.get("ignore") for a in gt["annotations"]) and any(a["area"] == 0 for a in gt["annotations"])
    res = evaluate_lvis(gt, dets, iou_type, max_dets_per_image=40)
    ev = run_lvis_api(tmp_path, gt, lvis_results(gt, dets, iou_type), iou_type, max_dets=40)
    assert_matches_lvis_api(res, ev, gt)


AREA_KEYS = ("APs", "APm", "APl", "ARs@300", "ARm@300", "ARl@300")


@pytest.mark.parametrize("case", ["random0", "random2", "crowded0", "crowded1"])
def test_box_sized_segm_matches_lvis_api_on_results_with_bbox(lvis_np2, tmp_path, case):
    """segm results that also carry a bbox (as detectron2 and mmdetection save them): lvis-api sizes them by
    box area, and so does det_area="box".  The crowded cases have boxes of width 0 (area 0: not evaluated)
    around non-empty masks."""
    max_dets = 300 if case.startswith("random") else 40
    gt, dets = make_case(int(case[-1]), ties=True) if case.startswith("random") else make_crowded_case(int(case[-1]))
    res = evaluate_lvis(gt, dets, "segm", max_dets, det_area="box")
    ev = run_lvis_api(tmp_path, gt, lvis_results(gt, dets, "segm", with_bbox=True), "segm", max_dets=max_dets)
    assert_matches_lvis_api(res, ev, gt)
    by_mask = evaluate_lvis(gt, dets, "segm", max_dets).metrics
    assert any(res.metrics[k] != by_mask[k] for k in AREA_KEYS)  # the sizing matters on this case
    assert res.metrics["AP"] == by_mask["AP"] or case.startswith("crowded")  # only area 0 changes "all"


def test_det_area_for_bbox_and_errors():
    gt, dets = make_case(0)
    assert evaluate_lvis(gt, dets, "bbox", det_area="box").metrics == evaluate_lvis(gt, dets, "bbox").metrics
    by_mask = evaluate_lvis(gt, dets, "bbox", det_area="mask").metrics  # boxes matched, masks sized
    assert by_mask["AP"] == evaluate_lvis(gt, dets, "bbox").metrics["AP"]
    assert by_mask != evaluate_lvis(gt, dets, "bbox").metrics
    with pytest.raises(ValueError, match="det_area"):
        evaluate_lvis(gt, dets, "segm", det_area="polygon")
    with pytest.raises(ValueError, match=r"\['x', 'y', 'w', 'h'\].*box areas"):
        evaluate_lvis(gt, dets.drop(columns=["x", "y", "w", "h"]), "segm", det_area="box")
    with pytest.raises(ValueError, match="rle_counts.*mask areas"):
        evaluate_lvis(gt, dets.drop(columns="rle_counts"), "bbox", det_area="mask")


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equal_iou_goes_to_the_last_ground_truth_as_in_lvis_api(lvis_np2, tmp_path, iou_type):
    """Two different boxes with exactly the same IoU with the first detection: lvis-api gives it the one
    it looks at last, and the second detection's match at high thresholds depends on that choice."""

    def rect(x, y, w, h):
        return [float(x), float(y), float(x + w), float(y), float(x + w), float(y + h), float(x), float(y + h)]

    images = [{"id": 1, "height": 60, "width": 60, "neg_category_ids": [], "not_exhaustive_category_ids": []}]
    anns = []
    for i, (x, y, w, h) in enumerate([(10, 10, 10, 12), (10, 8, 10, 12)]):
        poly = rect(x, y, w, h)
        anns.append(
            {"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": [poly], "area": float(w * h),
             "bbox": [float(x), float(y), float(w), float(h)]}
        )  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a", "frequency": "f"}]}
    boxes = [(10, 10, 10, 10), (10, 12, 10, 10)]
    dets = pd.DataFrame(
        {
            "image_id": [1, 1],
            "category_id": [1, 1],
            "score": [0.9, 0.8],
            "x": [float(b[0]) for b in boxes],
            "y": [float(b[1]) for b in boxes],
            "w": [float(b[2]) for b in boxes],
            "h": [float(b[3]) for b in boxes],
            "rle_counts": [_rle(rect(*b), 60, 60)["counts"] for b in boxes],
        }
    )
    res = evaluate_lvis(gt, dets, iou_type)
    ev = run_lvis_api(tmp_path, gt, lvis_results(gt, dets, iou_type), iou_type)
    assert_matches_lvis_api(res, ev, gt)
    # the second detection is a true positive at 0.80 (IoU 0.83 with the first annotation, left free)
    assert ev.eval["recall"][6, 0, 0] == 1.0 and res.metrics["AR@300"] > 0.5


def cap_per_class(results: list[dict], k: int) -> list[dict]:
    """The Fixed AP reference (Dave et al.'s evaluate_ap_fixed.py): each class's top ``k`` by score."""
    by_cat: dict[int, list[dict]] = {}
    for r in results:
        by_cat.setdefault(r["category_id"], []).append(r)
    # copies: lvis-api writes into the dicts it gets
    return [dict(r) for anns in by_cat.values() for r in sorted(anns, key=lambda a: a["score"], reverse=True)[:k]]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [1, 2])
def test_fixed_ap_matches_lvis_api_on_per_class_capped_results(lvis_np2, tmp_path, seed, iou_type):
    gt, dets = make_case(seed, ties=seed == 2)
    results = lvis_results(gt, dets, iou_type)
    per_class = dets.groupby("category_id").size()
    assert (dets.groupby("image_id").size() > 300).any()  # the per-image cap that Fixed AP drops
    k = int(per_class.median())  # a cap that cuts about half of the classes
    assert (per_class > k).any()

    res = evaluate_lvis(gt, dets, iou_type, fixed_ap=True, max_dets_per_class=k)
    ev = run_lvis_api(tmp_path, gt, cap_per_class(results, k), iou_type, max_dets=-1)
    assert_matches_lvis_api(res, ev, gt)
    assert res.metrics == evaluate_lvis(gt, dets, iou_type, None, max_dets_per_class=k).metrics

    # the paper's K = 10,000 cuts nothing here: all detections, no per-image cap
    full = evaluate_lvis(gt, dets, iou_type, fixed_ap=True)
    ev = run_lvis_api(tmp_path, gt, cap_per_class(results, FIXED_AP_DETS_PER_CLASS), iou_type, max_dets=-1)
    assert_matches_lvis_api(full, ev, gt)
    assert full.metrics != evaluate_lvis(gt, dets, iou_type).metrics
    assert full.metrics != res.metrics


def test_box_iou_is_pycocotools_bit_for_bit():
    rng = np.random.default_rng(0)
    dt = np.c_[rng.uniform(-5, 50, (400, 2)), rng.uniform(-1, 30, (400, 2))]
    gt = np.c_[rng.uniform(0, 50, (7, 2)), rng.uniform(0.5, 30, (7, 2))]
    gt[3] = dt[5]  # identical boxes: IoU exactly 1
    ref = mask_utils.iou(dt, gt, np.zeros(len(gt), dtype=np.uint8))
    got = lvis_match.box_iou(np.repeat(dt, len(gt), axis=0), np.tile(gt, (len(dt), 1))).reshape(len(dt), len(gt))
    assert np.array_equal(got, ref)
    assert got[5, 3] == pytest.approx(1.0) and (got == 0).any()


def test_recall_positions_equal_searchsorted_on_float_recall():
    """accumulate() finds recall thresholds on integer counts; lvis-api on tp / num_gt floats."""
    rng = np.random.default_rng(1)
    for num_gt in [1, 2, 3, 7, 10, 29, 49, 99, 100, 101, 300, 997, 1000, 4096, 10007]:
        need = lvis_match._min_count_for_recall(np.array([num_gt]), lvis_match.RECALL_THRESHOLDS)[0]
        for _ in range(5):
            tp = np.sort(rng.integers(0, num_gt + 1, size=int(rng.integers(1, 3 * num_gt + 2))))
            expected = np.searchsorted(tp.astype(np.float64) / num_gt, lvis_match.RECALL_THRESHOLDS, side="left")
            assert np.array_equal(np.searchsorted(tp, need, side="left"), expected), num_gt


def test_empty_detections(lvis_np2, tmp_path):
    gt, dets = make_case(0)
    empty = dets.iloc[:0]
    res = evaluate_lvis(gt, empty, "bbox")
    # lvis-api cannot take an empty list; one detection it ignores (class neither positive nor negative
    # on its image) is the same thing.
    img = gt["images"][0]
    ignored = next(c["id"] for c in gt["categories"] if c["id"] not in img["neg_category_ids"])
    one = [{"image_id": img["id"], "category_id": ignored, "score": 0.5, "bbox": [1.0, 1.0, 5.0, 5.0]}]
    ev = run_lvis_api(tmp_path, gt, one, "bbox")
    assert_matches_lvis_api(res, ev, gt)
    pc = res.per_class
    assert (pc.loc[pc["num_gt"] > 0, "ap"] == 0).all()
    assert (pc["num_dets"] == 0).all()
    assert res.metrics["AP"] == 0.0 and res.metrics["AR@300"] == 0.0
    assert evaluate_lvis(gt, empty, "segm").metrics == res.metrics


def test_row_order_only_matters_for_ties():
    gt, dets = make_case(1)
    a = evaluate_lvis(gt, dets, "bbox")
    b = evaluate_lvis(gt, dets.sample(frac=1.0, random_state=0), "bbox")
    assert a.metrics == pytest.approx(b.metrics, abs=1e-12)
    pd.testing.assert_frame_equal(a.per_class, b.per_class)


def test_per_class_dtypes_and_mean_ap_edge_cases():
    gt, dets = make_case(0)
    pc = evaluate_lvis(gt, dets, "bbox").per_class
    assert list(pc.columns) == ["category_id", "ap", "num_gt", "num_dets"]
    assert [str(t) for t in pc.dtypes] == ["int64", "float64", "int64", "int64"]
    no_gt = pc.loc[pc["num_gt"] == 0, "category_id"].tolist()
    assert no_gt and mean_ap(pc, no_gt) == -1.0
    assert mean_ap(pc, []) == -1.0


def test_input_errors():
    gt, dets = make_case(0)
    bad_img = dets.copy()
    bad_img.loc[[0, 1], "image_id"] = [999999, 888888]
    with pytest.raises(ValueError, match="888888.*999999"):
        evaluate_lvis(gt, bad_img, "bbox")
    nan = dets.copy()
    nan.loc[3, "score"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_lvis(gt, nan, "segm")
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_lvis(gt, dets, "keypoints")
    with pytest.raises(ValueError, match="rle_counts"):
        evaluate_lvis(gt, dets.drop(columns="rle_counts"), "segm")
    with pytest.raises(ValueError, match="max_dets_per_image"):
        evaluate_lvis(gt, dets, "bbox", max_dets_per_image=0)
    with pytest.raises(ValueError, match="max_dets_per_class"):
        evaluate_lvis(gt, dets, "bbox", max_dets_per_class=2.5)

    # corrupt ground truth is refused, naming what is wrong
    dup = copy.deepcopy(gt)
    dup["annotations"][1]["id"] = dup["annotations"][0]["id"]
    with pytest.raises(ValueError, match="duplicate annotation ids"):
        evaluate_lvis(dup, dets, "bbox")
    stray = copy.deepcopy(gt)
    stray["annotations"][0]["image_id"] = 55555
    with pytest.raises(ValueError, match="image id.*55555"):
        evaluate_lvis(stray, dets, "bbox")
    stray = copy.deepcopy(gt)
    stray["annotations"][0]["category_id"] = 4444
    with pytest.raises(ValueError, match="category id.*4444"):
        evaluate_lvis(stray, dets, "segm")
    with pytest.raises(ValueError, match="images, annotations and categories"):
        evaluate_lvis({"images": []}, dets, "bbox")


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_case(tmp_path):
    gt, dets = make_case(1)
    dets = dets[dets["image_id"].isin([img["id"] for img in gt["images"][2:]])].reset_index(drop=True)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    return gt, dets, gt_path


def test_cli_bbox_json_matches_lvis_api_on_the_same_file(lvis_np2, tmp_path, capsys, cli_case):
    gt, dets, gt_path = cli_case
    results = lvis_results(gt, dets, "segm")
    rng = np.random.default_rng(7)
    for r, box in zip(results, dets[["x", "y", "w", "h"]].to_numpy(np.float64).tolist(), strict=True):
        r["bbox"] = [v + float(rng.uniform(-0.3, 0.3)) for v in box]  # float64 boxes, not float32
    json_path = tmp_path / "dets.json"
    json_path.write_text(json.dumps(results))
    assert main(["--gt", str(gt_path), "--dets", str(json_path), "--iou-type", "bbox"]) == 0
    out = json.loads(capsys.readouterr().out)
    lvis_gt = LVIS(str(gt_path))
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, str(json_path)), "bbox")
    ev.run()
    assert out == pytest.approx({k: float(v) for k, v in ev.get_results().items()}, abs=1e-6)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_cli_json_and_parquet(tmp_path, capsys, cli_case, iou_type):
    gt, dets, gt_path = cli_case
    # detections with boxes are sized by their box, as lvis-api does; --area mask sizes segm by the mask
    expected = evaluate_lvis(gt, dets, iou_type, det_area="box").metrics
    by_mask = evaluate_lvis(gt, dets, iou_type).metrics
    assert (expected == by_mask) == (iou_type == "bbox")

    # LVIS results json with both bbox and segmentation, as detectors write them
    json_path = tmp_path / "dets.json"
    json_path.write_text(json.dumps(lvis_results(gt, dets, "segm", with_bbox=True)))
    assert main(["--gt", str(gt_path), "--dets", str(json_path), "--iou-type", iou_type]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == list(METRIC_KEYS)
    assert out == pytest.approx(expected, abs=1e-12)
    assert main(["--gt", str(gt_path), "--dets", str(json_path), "--iou-type", iou_type, "--area", "mask"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(by_mask, abs=1e-12)

    # Parquet, rle counts as bytes and as str
    for counts in ("bytes", "str"):
        frame = dets.copy()
        if counts == "str":
            frame["rle_counts"] = [c.decode() for c in frame["rle_counts"]]
        pq_path = tmp_path / f"dets_{counts}.parquet"
        frame.to_parquet(pq_path)
        assert main(["--gt", str(gt_path), "--dets", str(pq_path), "--iou-type", iou_type]) == 0
        assert json.loads(capsys.readouterr().out) == pytest.approx(expected, abs=1e-12)
    assert main(["--gt", str(gt_path), "--dets", str(pq_path), "--iou-type", iou_type, "--area", "mask"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(by_mask, abs=1e-12)
    # Parquet masks without boxes: sized by the mask, as lvis-api sizes a results json without bbox
    if iou_type == "segm":
        dets.drop(columns=["x", "y", "w", "h"]).to_parquet(pq_path)
        assert main(["--gt", str(gt_path), "--dets", str(pq_path), "--iou-type", iou_type]) == 0
        assert json.loads(capsys.readouterr().out) == pytest.approx(by_mask, abs=1e-12)


def lvis_api_on_file(gt_path, results_path, iou_type: str) -> dict[str, float]:
    """lvis-api's metrics on a results file, read by lvis-api itself."""
    lvis_gt = LVIS(str(gt_path))
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, str(results_path)), iou_type)
    ev.run()
    return {k: float(v) for k, v in ev.get_results().items()}


@pytest.mark.parametrize("with_bbox", [True, False])
def test_cli_segm_sizes_detections_as_lvis_api_on_the_same_file(lvis_np2, tmp_path, capsys, with_bbox):
    """lst-eval and lvis-api on one segm results json: with a bbox in every record (detectron2's and
    mmdetection's files) both size detections by box area, without by mask area; and the Parquet those
    detections came from, exported to that json, gives the same numbers."""
    gt, dets = make_case(0)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    json_path = tmp_path / "dets.json"
    json_path.write_text(json.dumps(lvis_results(gt, dets, "segm", with_bbox=with_bbox)))
    assert main(["--gt", str(gt_path), "--dets", str(json_path), "--iou-type", "segm"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == pytest.approx(lvis_api_on_file(gt_path, json_path, "segm"), abs=1e-6)
    by_mask = evaluate_lvis(gt, dets, "segm").metrics
    assert (out == pytest.approx(by_mask, abs=1e-12)) != with_bbox
    assert out["APs"] != by_mask["APs"] or not with_bbox

    if with_bbox:  # detections.parquet (float32 columns) -> its export -> lvis-api, against lst-eval on it
        pq_path, exported = tmp_path / "detections.parquet", tmp_path / "exported.json"
        dets.to_parquet(pq_path)
        assert (
            main(["--gt", str(gt_path), "--dets", str(pq_path), "--iou-type", "segm", "--export-json", str(exported)])
            == 0
        )
        out = json.loads(capsys.readouterr().out)
        assert out == pytest.approx(lvis_api_on_file(gt_path, exported, "segm"), abs=1e-6)


def test_cli_refuses_results_where_only_some_have_a_bbox(tmp_path, capsys, cli_case):
    """lvis-api sizes every result as it sizes the first one (and fails on a later one without bbox)."""
    gt, dets, gt_path = cli_case
    results = lvis_results(gt, dets, "segm", with_bbox=True)
    del results[3]["bbox"]
    json_path = tmp_path / "mixed.json"
    json_path.write_text(json.dumps(results))
    for area in ("lvis", "mask"):
        assert main(["--gt", str(gt_path), "--dets", str(json_path), "--iou-type", "segm", "--area", area]) == 2
        err = capsys.readouterr().err
        assert str(json_path) in err and "detection #3 has no bbox" in err
    # masks alone cannot be evaluated as boxes (lvis-api would take their bounding boxes)
    json_path.write_text(json.dumps(lvis_results(gt, dets, "segm")))
    assert main(["--gt", str(gt_path), "--dets", str(json_path), "--iou-type", "bbox"]) == 1
    assert "['x', 'y', 'w', 'h']" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys, cli_case):
    gt, dets, gt_path = cli_case
    good = tmp_path / "dets.parquet"
    dets.to_parquet(good)

    missing = tmp_path / "nope.json"
    assert main(["--gt", str(missing), "--dets", str(good), "--iou-type", "bbox"]) == 2
    assert str(missing) in capsys.readouterr().err

    assert main(["--gt", str(gt_path), "--dets", str(missing), "--iou-type", "bbox"]) == 2
    assert str(missing) in capsys.readouterr().err

    broken_json = tmp_path / "broken.json"
    broken_json.write_text('[{"image_id": 1,')
    assert main(["--gt", str(gt_path), "--dets", str(broken_json), "--iou-type", "bbox"]) == 2
    assert str(broken_json) in capsys.readouterr().err

    assert main(["--gt", str(broken_json), "--dets", str(good), "--iou-type", "bbox"]) == 2
    assert str(broken_json) in capsys.readouterr().err

    broken_pq = tmp_path / "broken.parquet"
    broken_pq.write_bytes(b"PAR1 not really parquet")
    assert main(["--gt", str(gt_path), "--dets", str(broken_pq), "--iou-type", "segm"]) == 2
    assert str(broken_pq) in capsys.readouterr().err

    not_a_list = tmp_path / "obj.json"
    not_a_list.write_text('{"image_id": 1}')
    assert main(["--gt", str(gt_path), "--dets", str(not_a_list), "--iou-type", "bbox"]) == 2
    assert str(not_a_list) in capsys.readouterr().err

    unknown = dets.copy()
    unknown.loc[0, "image_id"] = 424242
    unknown_path = tmp_path / "unknown.parquet"
    unknown.to_parquet(unknown_path)
    assert main(["--gt", str(gt_path), "--dets", str(unknown_path), "--iou-type", "bbox"]) == 1
    err = capsys.readouterr().err
    assert "424242" in err and str(unknown_path) in err

    # a bbox-only results file cannot be evaluated as segm
    bbox_only = tmp_path / "bbox_only.json"
    bbox_only.write_text(json.dumps(lvis_results(gt, dets, "bbox")))
    assert main(["--gt", str(gt_path), "--dets", str(bbox_only), "--iou-type", "segm"]) == 1
    assert "rle_counts" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["--gt", str(gt_path), "--dets", str(good), "--iou-type", "keypoints"])


# --------------------------------------------------------------------------- LVIS results export


def test_export_lvis_results_round_trip(lvis_np2, tmp_path, cli_case):
    gt, dets, gt_path = cli_case
    out = tmp_path / "sub" / "results.json"
    assert export_lvis_results(dets, out, image_sizes(gt)) == len(dets)
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temporary file left behind

    # lvis-api reads it as the evaluation server would
    lvis_dt = LVISResults(LVIS(str(gt_path)), str(out), max_dets=-1)
    anns = lvis_dt.dataset["annotations"]
    hw = image_sizes(gt)
    assert [a["image_id"] for a in anns] == dets["image_id"].tolist()
    assert [a["category_id"] for a in anns] == dets["category_id"].tolist()
    assert [a["score"] for a in anns] == dets["score"].astype(np.float64).tolist()
    assert [a["bbox"] for a in anns] == dets[["x", "y", "w", "h"]].to_numpy(np.float64).tolist()
    assert [a["segmentation"]["counts"] for a in anns] == [c.decode() for c in dets["rle_counts"]]
    assert all(a["segmentation"]["size"] == list(hw[a["image_id"]]) for a in anns)

    # and so does lst, to the same detections and the same metrics
    back = load_detections(out)
    for c in ("image_id", "category_id"):
        assert back[c].tolist() == dets[c].tolist()
    for c in ("score", "x", "y", "w", "h"):
        assert np.array_equal(back[c].to_numpy(), dets[c].to_numpy(np.float64)), c
    assert back["rle_counts"].tolist() == [c.decode() for c in dets["rle_counts"]]
    for iou_type in ("bbox", "segm"):
        assert evaluate_lvis(gt, back, iou_type).metrics == evaluate_lvis(gt, dets, iou_type).metrics


def test_export_cli_and_errors(tmp_path, capsys, cli_case):
    gt, dets, gt_path = cli_case
    pq_path = tmp_path / "detections.parquet"
    dets.to_parquet(pq_path)
    out = tmp_path / "results.json"
    assert main(["--gt", str(gt_path), "--dets", str(pq_path), "--export-json", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and str(out) in captured.err  # no --iou-type: export only
    records = json.loads(out.read_text())
    assert len(records) == len(dets)
    assert set(records[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}

    # export and evaluate in one call
    out2 = tmp_path / "results2.json"
    assert main(["--gt", str(gt_path), "--dets", str(pq_path), "--iou-type", "segm", "--export-json", str(out2)]) == 0
    expected = evaluate_lvis(gt, dets, "segm", det_area="box").metrics  # the Parquet has boxes
    assert json.loads(capsys.readouterr().out) == pytest.approx(expected, abs=1e-12)
    assert out2.read_bytes() == out.read_bytes()

    with pytest.raises(ValueError, match="image sizes"):
        export_lvis_results(dets, tmp_path / "x.json")
    with pytest.raises(ValueError, match="without a size"):
        export_lvis_results(dets, tmp_path / "x.json", {1: (10, 10)})
    # boxes alone need no sizes
    export_lvis_results(dets.drop(columns="rle_counts"), tmp_path / "boxes.json")
    assert "segmentation" not in json.loads((tmp_path / "boxes.json").read_text())[0]
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(SystemExit):
        main(["--gt", str(gt_path), "--dets", str(pq_path)])  # neither --iou-type nor --export-json


def test_cli_fixed_ap(tmp_path, capsys, cli_case):
    gt, dets, gt_path = cli_case
    pq_path = tmp_path / "detections.parquet"
    dets.to_parquet(pq_path)
    assert main(["--gt", str(gt_path), "--dets", str(pq_path), "--iou-type", "bbox", "--fixed-ap"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == pytest.approx(evaluate_lvis(gt, dets, "bbox", fixed_ap=True).metrics, abs=1e-12)
    assert out != pytest.approx(evaluate_lvis(gt, dets, "bbox").metrics, abs=1e-12)
    with pytest.raises(SystemExit):
        main(["--gt", str(gt_path), "--dets", str(pq_path), "--iou-type", "bbox", "--fixed-ap", "--max-dets", "100"])


# --------------------------------------------------------------------------- per-model Markdown tables


def test_model_markdown_has_every_table_and_number():
    from lst.evaluation.phase_metrics import INSTANCE_BINS
    from lst.reporting.report import model_markdown

    gt, dets = make_case(1)
    cats = sorted(c["id"] for c in gt["categories"])
    seen = pd.DataFrame(
        {
            "category_id": cats,
            "name": [f"c{c}" for c in cats],
            "frequency": [next(x["frequency"] for x in gt["categories"] if x["id"] == c) for c in cats],
            "phase": [0] * 6 + [1] * 6,
            "rank": list(range(12, 0, -1)),
            "instance_count": [5, 50, 500, 5000] * 3,
        }
    )
    metrics, per_class = [], []
    for iou_type in ("segm", "bbox"):
        res = evaluate_lvis(gt, dets, iou_type)
        values = dict(res.metrics)
        for j in (0, 1):
            values[f"AP_phase{j}"] = mean_ap(res.per_class, seen.loc[seen["phase"] == j, "category_id"])
        for name, low, high in INSTANCE_BINS:
            in_bin = seen["instance_count"].between(low, high, "left")
            values[name] = mean_ap(res.per_class, seen.loc[in_bin, "category_id"])
        metrics += [{"iou_type": iou_type, "metric": k, "value": v} for k, v in values.items()]
        per_class.append(seen.merge(res.per_class[["category_id", "num_gt", "ap"]]).assign(iou_type=iou_type))
    metrics, per_class = pd.DataFrame(metrics), pd.concat(per_class, ignore_index=True)

    text = model_markdown(metrics, per_class, "lst, phase 1")
    lines = text.splitlines()
    assert lines[0] == "# lst, phase 1"
    row = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    value = {(r.iou_type, r.metric): r.value for r in metrics.itertuples()}
    for k in METRIC_KEYS:
        assert row[k] == f"| {k} | {100 * value[('segm', k)]:.1f} | {100 * value[('bbox', k)]:.1f} |"
    assert row["0"].endswith(f"| {100 * value[('segm', 'AP_phase0')]:.1f} | {100 * value[('bbox', 'AP_phase0')]:.1f} |")
    assert row["<10"].startswith("| <10 | 3 |")
    # per-class rows in training order (rank), "n/a" for classes without ground truth
    class_rows = [line for line in lines if line.startswith("| ") and re.fullmatch(r"c\d+", line.split(" | ")[1])]
    assert [int(r.split(" | ")[0][2:]) for r in class_rows] == cats[::-1]
    segm = per_class[per_class["iou_type"] == "segm"].set_index("category_id")
    for r in class_rows:
        c = int(r.split(" | ")[0][2:])
        expected = "n/a" if np.isnan(segm.loc[c, "ap"]) else f"{100 * segm.loc[c, 'ap']:.1f}"
        assert r.split(" | ")[-2] == expected
    assert "n/a" in text


def test_segmentation_rle_is_lvis_api_ann_to_rle(tmp_path):
    """The one decoding of segmentations (training's mask targets and this evaluator) against lvis-api's."""
    from lst.data.segmentation import segmentation_rle

    height, width = 30, 40
    full = np.zeros((height, width), np.uint8)
    full[3:20, 5:17] = 1
    compressed = mask_utils.encode(np.asfortranarray(full))
    # uncompressed counts: the runs of 0s and 1s in column order, 0s first (full[0, 0] is 0)
    values = full.ravel(order="F").astype(np.int64)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, values, -1]))).tolist()
    segmentations = [
        [[5.0, 10, 15, 10, 15, 25], [20.5, 2, 30, 2, 30, 9.5, 20.5, 9.5]],  # two polygon parts: one mask
        {"size": [height, width], "counts": runs},
        {"size": [height, width], "counts": compressed["counts"].decode()},
    ]
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": s, "area": 1.0, "bbox": [0, 0, 1, 1]}
            for i, s in enumerate(segmentations)]  # fmt: skip
    gt = {"images": [{"id": 1, "height": height, "width": width}], "categories": [{"id": 1, "name": "a"}],
          "annotations": anns}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    reference = LVIS(str(tmp_path / "gt.json"))
    for ann in anns:
        ours, theirs = segmentation_rle(ann["segmentation"], height, width), reference.ann_to_rle(ann)
        assert (mask_utils.decode(ours) == mask_utils.decode(theirs)).all()
        assert ours["size"] == list(theirs["size"])
    assert mask_utils.decode(segmentation_rle(segmentations[1], height, width)).tolist() == full.tolist()
