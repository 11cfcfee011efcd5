"""LVIS federated evaluation (bbox and segm) on columnar detections.

The numbers are those of the reference lvis-api (``lvis/eval.py``, ``LVISEval``), computed with
faster-coco-eval's C++ evaluator (``COCOeval_faster(..., lvis_style=True)``), which reproduces them and,
unlike lvis 0.5.3, runs on numpy 2. The rules, as in lvis-api:

* at most ``max_dets_per_image`` (300) detections per image, the top ones by score, cut per image before
  anything else (as ``LVISResults.limit_dets_per_image``); ties are broken by row order;
* a detection whose class is neither annotated in its image nor in the image's ``neg_category_ids`` is
  ignored (neither true nor false positive), as is a detection of a class absent from ``gt["categories"]``;
* an unmatched detection of a class in the image's ``not_exhaustive_category_ids`` is not a false positive;
* IoU thresholds 0.50:0.05:0.95, 101 recall points, area ranges all/small/medium/large.  Ground truth size
  is its ``area`` field; a detection's size is ``w * h`` for bbox and its mask area for segm (lvis-api uses
  the box area for segm results that also carry a box; detectron2 drops the box to get mask areas, and so
  do we, since segm detections are given here by their RLE alone);
* a summary with no valid entry (e.g. APr when no rare class has ground truth) is -1.

LVIS annotations carry no crowd flag: ``iscrowd`` is not used (lvis-api does not use it either).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

METRIC_KEYS = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "APr",
    "APc",
    "APf",
    "AR@300",
    "ARs@300",
    "ARm@300",
    "ARl@300",
)

IOU_TYPES = ("bbox", "segm")
_FREQUENCIES = ("r", "c", "f")
_AREA_LABELS = ("all", "small", "medium", "large")
_BOX_COLUMNS = ("x", "y", "w", "h")


@dataclass
class EvalResult:
    """Summary metrics (lvis-api's keys, -1.0 where lvis-api gives -1) and per-class results.

    ``per_class`` has one row per category of ``gt["categories"]``, sorted by id, with columns
    ``category_id`` (int64), ``ap`` (float64; mean of precision over IoU and recall thresholds at area
    "all", NaN when the class has no ground truth in the set), ``num_gt`` (int64, ground-truth
    annotations) and ``num_dets`` (int64, detections that take part in the evaluation: kept by the
    per-image cut and by the federated filter).
    """

    metrics: dict[str, float]
    per_class: pd.DataFrame


def mean_ap(per_class: pd.DataFrame, category_ids: Iterable[int]) -> float:
    """Mean per-class AP over ``category_ids`` that have ground truth (NaN ignored); -1.0 if none.

    Over all classes this equals ``metrics["AP"]``, over the r/c/f classes APr/APc/APf: every class
    with ground truth contributes the same number (IoU x recall thresholds) of precision entries to
    lvis-api's mean.
    """
    ids = np.fromiter((int(c) for c in category_ids), dtype=np.int64)
    ap = per_class.loc[per_class["category_id"].isin(ids), "ap"].dropna()
    if ap.empty:
        return -1.0
    return float(ap.mean())


def evaluate_lvis(gt: dict, detections: pd.DataFrame, iou_type: str, max_dets_per_image: int = 300) -> EvalResult:
    """Evaluate ``detections`` against the LVIS-format ``gt`` dict (not modified) with LVIS rules.

    ``detections`` columns: ``image_id``, ``category_id``, ``score``; for bbox ``x, y, w, h`` (absolute
    pixels, xywh); for segm ``rle_counts`` (pycocotools compressed RLE counts, bytes or str, of a mask of
    the size given by the gt image entry).  Raises ValueError for an unknown ``iou_type``, missing columns,
    NaN scores, non-finite boxes, missing RLEs or image ids absent from ``gt``.

    The metric keys are always ``METRIC_KEYS``: as in lvis-api, the AR keys say "@300" whatever
    ``max_dets_per_image`` is.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if isinstance(max_dets_per_image, bool) or int(max_dets_per_image) < 1:
        raise ValueError(f"max_dets_per_image must be a positive integer, got {max_dets_per_image!r}")
    max_dets = int(max_dets_per_image)

    dets = _validate_detections(detections, iou_type, gt)
    dets = _top_k_per_image(dets, max_dets)
    dets = _federated_filter(dets, gt)

    cat_ids = np.array(sorted({int(c["id"]) for c in gt["categories"]}), dtype=np.int64)
    freq_groups = _frequency_groups(gt, cat_ids)
    precision, recall = _run_faster_coco_eval(gt, dets, iou_type, max_dets, cat_ids)

    metrics = _summarize(precision, recall, freq_groups)
    per_class = _per_class(gt, dets, precision, cat_ids)
    return EvalResult(metrics=metrics, per_class=per_class)


# --------------------------------------------------------------------------- detections


def _validate_detections(detections: pd.DataFrame, iou_type: str, gt: dict) -> pd.DataFrame:
    required = ["image_id", "category_id", "score"]
    required += list(_BOX_COLUMNS) if iou_type == "bbox" else ["rle_counts"]
    missing = [c for c in required if c not in detections.columns]
    if missing:
        raise ValueError(f"detections lack column(s) {missing} needed for iou_type={iou_type!r}")

    dets = pd.DataFrame(
        {
            "image_id": _int_column(detections["image_id"], "image_id"),
            "category_id": _int_column(detections["category_id"], "category_id"),
            "score": detections["score"].to_numpy(dtype=np.float64),
        }
    )
    if np.isnan(dets["score"].to_numpy()).any():
        bad = np.flatnonzero(np.isnan(dets["score"].to_numpy()))
        raise ValueError(f"detections have NaN scores ({bad.size} rows, first row positions {bad[:5].tolist()})")

    if iou_type == "bbox":
        for c in _BOX_COLUMNS:
            dets[c] = detections[c].to_numpy(dtype=np.float64)
        boxes = dets[list(_BOX_COLUMNS)].to_numpy()
        if not np.isfinite(boxes).all():
            bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
            raise ValueError(f"detections have non-finite boxes ({bad.size} rows, first {bad[:5].tolist()})")
    else:
        counts = detections["rle_counts"].to_numpy(dtype=object)
        bad = np.flatnonzero([not isinstance(c, (bytes, str)) for c in counts])
        if bad.size:
            raise ValueError(
                f"rle_counts must be bytes or str (compressed RLE); {bad.size} rows are not, "
                f"first row positions {bad[:5].tolist()}"
            )
        dets["rle_counts"] = counts

    gt_img_ids = np.array([int(img["id"]) for img in gt["images"]], dtype=np.int64)
    unknown = np.setdiff1d(dets["image_id"].to_numpy(), gt_img_ids)
    if unknown.size:
        raise ValueError(
            f"detections refer to {unknown.size} image id(s) not in the ground truth, e.g. {unknown[:5].tolist()}"
        )
    return dets


def _int_column(col: pd.Series, name: str) -> np.ndarray:
    values = col.to_numpy()
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    as_float = np.asarray(values, dtype=np.float64)
    if not np.isfinite(as_float).all() or (as_float != np.round(as_float)).any():
        raise ValueError(f"detections column {name!r} must hold integers")
    return as_float.astype(np.int64)


def _top_k_per_image(dets: pd.DataFrame, k: int) -> pd.DataFrame:
    """Keep the ``k`` best-scored detections of each image (ties: earlier row first), in row order."""
    n = len(dets)
    if n == 0:
        return dets.reset_index(drop=True)
    image_id = dets["image_id"].to_numpy()
    order = np.lexsort((np.arange(n), -dets["score"].to_numpy(), image_id))  # last key is primary
    sorted_img = image_id[order]
    starts = np.flatnonzero(np.r_[True, sorted_img[1:] != sorted_img[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.arange(n) - group_start
    keep = np.sort(order[rank < k])
    return dets.iloc[keep].reset_index(drop=True)


def _pair_index(image_ids: Iterable[int], cat_ids: Iterable[int]) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays(
        [np.asarray(list(image_ids), dtype=np.int64), np.asarray(list(cat_ids), dtype=np.int64)]
    )


def _federated_filter(dets: pd.DataFrame, gt: dict) -> pd.DataFrame:
    """Drop detections lvis-api never evaluates: class neither positive nor negative in the image, or
    not among the categories.  Done before building per-detection records, which is where the cost is."""
    anns = gt["annotations"]
    pos_img = [int(a["image_id"]) for a in anns]
    pos_cat = [int(a["category_id"]) for a in anns]
    neg_img, neg_cat = [], []
    for img in gt["images"]:
        negs = img.get("neg_category_ids", []) or []
        neg_img.extend([int(img["id"])] * len(negs))
        neg_cat.extend(int(c) for c in negs)
    allowed = _pair_index(pos_img + neg_img, pos_cat + neg_cat)
    cats = {int(c["id"]) for c in gt["categories"]}
    pairs = _pair_index(dets["image_id"], dets["category_id"])
    keep = pairs.isin(allowed) & dets["category_id"].isin(cats).to_numpy()
    return dets.loc[keep].reset_index(drop=True)


def _detection_records(dets: pd.DataFrame, iou_type: str, img_hw: dict[int, tuple[int, int]]) -> list[dict]:
    """The one place that builds a dict per detection (faster-coco-eval's C++ dataset takes dicts)."""
    from faster_coco_eval.core import mask as mask_utils

    n = len(dets)
    ids = range(1, n + 1)  # 0 would read as "unmatched" in the matcher
    image_ids = dets["image_id"].tolist()
    cat_ids = dets["category_id"].tolist()
    scores = dets["score"].tolist()
    if iou_type == "bbox":
        x, y, w, h = (dets[c].to_numpy(dtype=np.float64) for c in _BOX_COLUMNS)
        boxes = np.stack([x, y, w, h], axis=1).tolist()
        areas = (w * h).tolist()
        return [
            {"id": i, "image_id": im, "category_id": c, "score": s, "bbox": b, "area": a, "iscrowd": 0}
            for i, im, c, s, b, a in zip(ids, image_ids, cat_ids, scores, boxes, areas, strict=True)
        ]
    rles = [
        {"size": [img_hw[im][0], img_hw[im][1]], "counts": counts}
        for im, counts in zip(image_ids, dets["rle_counts"].tolist(), strict=True)
    ]
    areas = np.asarray(mask_utils.area(rles), dtype=np.float64).tolist() if rles else []
    return [
        {"id": i, "image_id": im, "category_id": c, "score": s, "segmentation": r, "area": a, "iscrowd": 0}
        for i, im, c, s, r, a in zip(ids, image_ids, cat_ids, scores, rles, areas, strict=True)
    ]


# --------------------------------------------------------------------------- evaluation


def _run_faster_coco_eval(
    gt: dict, dets: pd.DataFrame, iou_type: str, max_dets: int, cat_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """precision [T, R, K, A] and recall [T, K, A] (K in ``cat_ids`` order), -1 where undefined."""
    from faster_coco_eval import COCO, COCOeval_faster

    # faster-coco-eval writes into the dicts it is given ("ignore", "rle", ...): hand it copies.
    images = [dict(img) for img in gt["images"]]
    categories = [dict(c) for c in gt["categories"]]
    annotations = []
    for i, ann in enumerate(gt["annotations"], start=1):
        a = dict(ann)
        a["id"] = i  # fresh ids: 0 means "unmatched" to the matcher
        a["iscrowd"] = 0
        a.pop("ignore", None)
        annotations.append(a)
    img_hw = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in images}

    silent = logging.getLogger(__name__ + ".faster_coco_eval").debug
    coco_gt = COCO(print_function=silent)
    coco_gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
    coco_gt.createIndex()
    coco_dt = COCO(print_function=silent)
    coco_dt.dataset = {
        "images": images,
        "annotations": _detection_records(dets, iou_type, img_hw),
        "categories": categories,
    }
    coco_dt.createIndex()

    ev = COCOeval_faster(coco_gt, coco_dt, iou_type, lvis_style=True, print_function=silent)
    ev.params.catIds = cat_ids.tolist()
    ev.params.maxDets = [max_dets]
    ev.evaluate()
    ev.accumulate()
    precision = np.asarray(ev.eval["precision"], dtype=np.float64)[..., -1]
    recall = np.asarray(ev.eval["recall"], dtype=np.float64)[..., -1]
    expected_areas = len(_AREA_LABELS)
    if precision.shape[2] != cat_ids.size or precision.shape[3] != expected_areas:
        raise RuntimeError(f"unexpected precision shape {precision.shape} from faster-coco-eval")
    return precision, recall


def _frequency_groups(gt: dict, cat_ids: np.ndarray) -> list[np.ndarray]:
    """Indices into ``cat_ids`` of the rare, common and frequent categories."""
    freq = {}
    for c in gt["categories"]:
        f = c.get("frequency")
        if f not in _FREQUENCIES:
            raise ValueError(f"category {c['id']} has frequency {f!r}, expected one of {_FREQUENCIES}")
        freq[int(c["id"])] = f
    labels = np.array([freq[int(c)] for c in cat_ids], dtype=object)
    return [np.flatnonzero(labels == f) for f in _FREQUENCIES]


def _masked_mean(s: np.ndarray) -> float:
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _summarize(precision: np.ndarray, recall: np.ndarray, freq_groups: Sequence[np.ndarray]) -> dict[str, float]:
    """lvis-api's ``LVISEval.summarize`` on precision [T, R, K, A] and recall [T, K, A]."""
    iou_thrs = np.linspace(0.5, 0.95, 10)
    t50 = int(np.flatnonzero(np.isclose(iou_thrs, 0.50))[0])
    t75 = int(np.flatnonzero(np.isclose(iou_thrs, 0.75))[0])
    a = {label: i for i, label in enumerate(_AREA_LABELS)}
    m = {
        "AP": _masked_mean(precision[:, :, :, a["all"]]),
        "AP50": _masked_mean(precision[t50, :, :, a["all"]]),
        "AP75": _masked_mean(precision[t75, :, :, a["all"]]),
        "APs": _masked_mean(precision[:, :, :, a["small"]]),
        "APm": _masked_mean(precision[:, :, :, a["medium"]]),
        "APl": _masked_mean(precision[:, :, :, a["large"]]),
        "APr": _masked_mean(precision[:, :, freq_groups[0], a["all"]]),
        "APc": _masked_mean(precision[:, :, freq_groups[1], a["all"]]),
        "APf": _masked_mean(precision[:, :, freq_groups[2], a["all"]]),
        "AR@300": _masked_mean(recall[:, :, a["all"]]),
        "ARs@300": _masked_mean(recall[:, :, a["small"]]),
        "ARm@300": _masked_mean(recall[:, :, a["medium"]]),
        "ARl@300": _masked_mean(recall[:, :, a["large"]]),
    }
    return {k: m[k] for k in METRIC_KEYS}


def _per_class(gt: dict, dets: pd.DataFrame, precision: np.ndarray, cat_ids: np.ndarray) -> pd.DataFrame:
    p = precision[:, :, :, 0]  # area "all"
    valid = p > -1
    n_valid = valid.sum(axis=(0, 1))
    total = np.where(valid, p, 0.0).sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(n_valid > 0, total / np.maximum(n_valid, 1), np.nan)
    gt_cats = pd.Series([int(a["category_id"]) for a in gt["annotations"]], dtype=np.int64)
    num_gt = gt_cats.value_counts().reindex(cat_ids, fill_value=0).to_numpy(dtype=np.int64)
    num_dets = dets["category_id"].value_counts().reindex(cat_ids, fill_value=0).to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "category_id": cat_ids.astype(np.int64),
            "ap": ap.astype(np.float64),
            "num_gt": num_gt,
            "num_dets": num_dets,
        }
    )


# --------------------------------------------------------------------------- files and CLI


def load_detections(path: str | Path) -> pd.DataFrame:
    """Read detections from Parquet (the columnar format above) or an LVIS results json.

    A results json is a list of ``{image_id, category_id, score, bbox?, segmentation?}`` where
    segmentation is a compressed RLE ``{"size": [h, w], "counts": str}``.  The frame gets the box columns
    when every record has a bbox, and ``rle_counts`` plus ``rle_height``/``rle_width`` when every record
    has a segmentation.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1" or path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    return _records_to_frame(records)


def _records_to_frame(records: Any) -> pd.DataFrame:
    if not isinstance(records, list):
        raise ValueError(f"an LVIS results json must hold a list of detections, not {type(records).__name__}")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not {"image_id", "category_id", "score"} <= r.keys():
            raise ValueError(f"detection #{i} is not an object with image_id, category_id and score")
    frame = pd.DataFrame(
        {
            "image_id": np.array([r["image_id"] for r in records], dtype=np.int64),
            "category_id": np.array([r["category_id"] for r in records], dtype=np.int64),
            "score": np.array([r["score"] for r in records], dtype=np.float64),
        }
    )
    if records and all("bbox" in r for r in records):
        boxes = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(len(records), 4)
        for j, c in enumerate(_BOX_COLUMNS):
            frame[c] = boxes[:, j]  # float64 as in the file, so lvis-api sees the same boxes
    if records and all("segmentation" in r for r in records):
        counts, heights, widths = [], [], []
        for i, r in enumerate(records):
            seg = r["segmentation"]
            if not isinstance(seg, dict) or not isinstance(seg.get("counts"), (str, bytes)):
                raise ValueError(f"detection #{i}: segmentation must be a compressed RLE {{size, counts: str}}")
            counts.append(seg["counts"])
            heights.append(int(seg["size"][0]))
            widths.append(int(seg["size"][1]))
        frame["rle_counts"] = pd.Series(counts, dtype=object)
        frame["rle_height"] = np.array(heights, dtype=np.int64)
        frame["rle_width"] = np.array(widths, dtype=np.int64)
    return frame


def _check_rle_sizes(dets: pd.DataFrame, gt: dict) -> None:
    if "rle_height" not in dets.columns or "rle_width" not in dets.columns:
        return
    hw = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in gt["images"]}
    for im, h, w in zip(dets["image_id"], dets["rle_height"], dets["rle_width"], strict=True):
        if int(im) in hw and hw[int(im)] != (int(h), int(w)):
            raise ValueError(
                f"segmentation size {[int(h), int(w)]} of a detection on image {int(im)} differs from the "
                f"image size {list(hw[int(im)])} in the ground truth"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lst-eval", description="LVIS federated evaluation (lvis-api numbers); prints metrics as JSON."
    )
    parser.add_argument("--gt", required=True, help="LVIS annotation json")
    parser.add_argument("--dets", required=True, help="LVIS results json or Parquet detections")
    parser.add_argument("--iou-type", required=True, choices=IOU_TYPES)
    parser.add_argument("--max-dets", type=int, default=300, help="detections kept per image (default 300)")
    args = parser.parse_args(argv)

    try:
        with open(args.gt, encoding="utf-8") as f:
            gt = json.load(f)
        if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= gt.keys():
            raise ValueError("not an LVIS annotation dict (needs images, annotations, categories)")
    except (OSError, ValueError) as e:
        print(f"lst-eval: cannot read ground truth file {args.gt}: {e}", file=sys.stderr)
        return 2
    try:
        dets = load_detections(args.dets)
    except Exception as e:  # json, pyarrow and OS errors alike: the file is unusable
        print(f"lst-eval: cannot read detections file {args.dets}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        _check_rle_sizes(dets, gt)
        result = evaluate_lvis(gt, dets, args.iou_type, max_dets_per_image=args.max_dets)
    except (ValueError, KeyError) as e:
        print(f"lst-eval: cannot evaluate {args.dets} against {args.gt}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
