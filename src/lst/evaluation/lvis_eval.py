"""LVIS federated evaluation (bbox and segm) on columnar detections, with lvis-api's numbers.

The numbers are those of the reference lvis-api (lvis 0.5.3, ``lvis/eval.py``, ``LVISEval``), computed by
a vectorized numpy evaluator (``lst.evaluation.lvis_match``) that reproduces its rules and floating-point operations
(tests/test_lvis_eval.py compares every metric with lvis-api itself).  Detections stay columns from the
Parquet file to the end; nothing builds a dict per detection (pycocotools gets {size, counts} pairs for
the masks it compares, only in segm mode).  The rules, as in lvis-api:

* at most ``max_dets_per_image`` (300) detections per image, the top ones by score, cut per image before
  anything else (as ``LVISResults.limit_dets_per_image``); ties are broken by row order;
* a detection whose class is neither annotated in its image nor in the image's ``neg_category_ids`` is
  ignored (neither true nor false positive), as is a detection of a class absent from ``gt["categories"]``;
* an unmatched detection of a class in the image's ``not_exhaustive_category_ids`` is not a false positive;
* ground truth and detections of area 0 take no part (lvis-api's ``get_ann_ids`` keeps 0 < area < inf);
  a ground truth with a true ``ignore`` field is ignored, as lvis-api does;
* IoU thresholds 0.50:0.05:0.95, 101 recall points, area ranges all/small/medium/large.  Ground truth size
  is its ``area`` field.  A detection's size (for the area ranges and the area-0 rule) is set by
  ``det_area``: by default ``w * h`` for bbox and the mask area for segm, as detectron2 evaluates (it drops
  the boxes of its segm results) and as the pipeline does; ``det_area="box"`` sizes segm detections by their
  box, as lvis-api's ``LVISResults`` does for results that carry a ``bbox`` (``lst-eval`` follows that rule
  by default, see ``lst.cli.lst_eval``);
* a summary with no valid entry (e.g. APr when no rare class has ground truth) is -1.

Fixed AP (Dave et al. 2021, "Evaluating Large-Vocabulary Object Detectors: The Devil is in the Details"):
``fixed_ap=True`` drops the per-image cap and keeps the top 10,000 detections of each class over the whole
set instead, as the paper's reference code does before calling lvis-api with ``max_dets=-1``.

Crowd regions (``iscrowd: 1``, COCO's; LVIS has none, and lvis-api ignores the flag) are handled as
pycocotools' ``COCOeval`` does: a crowd ground truth is ignored in every area range, matched after the
others, and never used up (several detections may match it); IoU with it is the intersection over the
detection's area; a detection matched to it is neither true nor false positive.  Crowd regions are not
counted in ``num_gt``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lst.data.segmentation import segmentation_rle
from lst.evaluation import lvis_match

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
DET_AREAS = ("box", "mask")  # what sizes a detection: its box (w * h) or its mask
AREA_RULES = ("lvis", "mask")  # lst-eval --area: as lvis-api's LVISResults, or by the mask (detectron2)
FIXED_AP_DETS_PER_CLASS = 10_000  # the paper's K for LVIS
_FREQUENCIES = ("r", "c", "f")
_AREA_LABELS = ("all", "small", "medium", "large")
BOX_COLUMNS = ("x", "y", "w", "h")


@dataclass
class EvalResult:
    """Summary metrics (lvis-api's keys, -1.0 where lvis-api gives -1) and per-class results.

    ``per_class`` has one row per category of ``gt["categories"]``, sorted by id, with columns
    ``category_id`` (int64), ``ap`` (float64; mean of precision over IoU and recall thresholds at area
    "all", NaN when the class has no ground truth in the set), ``num_gt`` (int64, ground-truth
    annotations) and ``num_dets`` (int64, detections that take part in the evaluation: kept by the
    per-image or per-class cut, by the federated filter and of non-zero area).
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


def evaluate_lvis(
    gt: dict,
    detections: pd.DataFrame,
    iou_type: str,
    max_dets_per_image: int | None = 300,
    *,
    max_dets_per_class: int | None = None,
    fixed_ap: bool = False,
    det_area: str | None = None,
) -> EvalResult:
    """Evaluate ``detections`` against the LVIS-format ``gt`` dict (not modified) with LVIS rules.

    ``detections`` columns: ``image_id``, ``category_id``, ``score``; for bbox ``x, y, w, h`` (absolute
    pixels, xywh); for segm ``rle_counts`` (pycocotools compressed RLE counts, bytes or str, of a mask of
    the size given by the gt image entry).  Raises ValueError for an unknown ``iou_type``, missing columns,
    NaN scores, non-finite boxes, missing RLEs, image ids absent from ``gt`` or a malformed ``gt``.

    ``max_dets_per_image`` (None: no cap) and ``max_dets_per_class`` (None: no cap; the top detections of
    each class over the whole set, applied first) cut the detections before evaluation.  ``fixed_ap=True``
    is Fixed AP: no per-image cap and ``max_dets_per_class`` or 10,000 per class.

    ``det_area`` sizes the detections: ``"box"`` (``w * h``, needs the box columns), ``"mask"`` (the RLE's
    area, needs ``rle_counts``) or None, the evaluated region's own (box for bbox, mask for segm).

    The metric keys are always ``METRIC_KEYS``: as in lvis-api, the AR keys say "@300" whatever the caps.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if det_area is not None and det_area not in DET_AREAS:
        raise ValueError(f"det_area must be one of {DET_AREAS} or None, got {det_area!r}")
    area_by = det_area or ("box" if iou_type == "bbox" else "mask")
    if fixed_ap:
        max_dets_per_image = None
        max_dets_per_class = FIXED_AP_DETS_PER_CLASS if max_dets_per_class is None else max_dets_per_class
    per_image = _check_cap(max_dets_per_image, "max_dets_per_image")
    per_class = _check_cap(max_dets_per_class, "max_dets_per_class")

    truth = _GroundTruth.build(gt, iou_type)
    dets = _validate_detections(detections, iou_type, area_by, truth.img_ids)
    rows = np.arange(len(detections), dtype=np.int64)  # cuts select rows; columns are gathered once, after
    if per_class is not None:
        rows = _top_k(dets, rows, "category_id", per_class)
    if per_image is not None:
        rows = _top_k(dets, rows, "image_id", per_image)
    dets = _select(dets, rows, truth, iou_type, area_by)

    precision, recall = _evaluate(truth, dets, iou_type)
    metrics = _summarize(precision, recall, truth.freq_groups)
    per_class_table = _per_class(truth, dets, precision)
    return EvalResult(metrics=metrics, per_class=per_class_table)


def _check_cap(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- ground truth


@dataclass
class _GroundTruth:
    """The gt dict as arrays.  Annotations kept (0 < area < inf, as lvis-api) are sorted by (image,
    category) pair, then annotation order; a pair key is ``image_index * num_categories + category_index``."""

    gt: dict
    img_ids: np.ndarray  # sorted
    img_hw: np.ndarray  # [images, 2] height, width
    cat_ids: np.ndarray  # sorted
    freq_groups: list[np.ndarray]
    ann_index: np.ndarray  # position in gt["annotations"]
    ann_pair: np.ndarray
    ann_cat: np.ndarray  # category index
    ann_area: np.ndarray
    ann_ignore: np.ndarray  # the annotation's own "ignore" field
    ann_crowd: np.ndarray  # a crowd region (COCO's iscrowd)
    ann_box: np.ndarray | None  # [n, 4] xywh, bbox only
    allowed_pairs: np.ndarray  # sorted: pairs with ground truth or listed as negative
    not_exhaustive_pairs: np.ndarray  # sorted
    num_gt_all: np.ndarray  # every annotation but crowd regions per category, for the per-class table

    @classmethod
    def build(cls, gt: dict, iou_type: str) -> _GroundTruth:
        try:
            images, anns, cats = gt["images"], gt["annotations"], gt["categories"]
        except (KeyError, TypeError) as e:
            raise ValueError("ground truth must be an LVIS dict with images, annotations and categories") from e
        img_ids = np.fromiter((int(img["id"]) for img in images), dtype=np.int64, count=len(images))
        cat_ids = np.fromiter((int(c["id"]) for c in cats), dtype=np.int64, count=len(cats))
        for name, ids in (("image", img_ids), ("category", cat_ids)):
            dup = _duplicates(ids)
            if dup.size:
                raise ValueError(f"ground truth has duplicate {name} ids, e.g. {dup[:5].tolist()}")
        img_order, cat_order = np.argsort(img_ids), np.argsort(cat_ids)
        hw = np.array([[int(img["height"]), int(img["width"])] for img in images], dtype=np.int64).reshape(-1, 2)
        n_cat = cat_ids.size

        a_img = np.fromiter((int(a["image_id"]) for a in anns), dtype=np.int64, count=len(anns))
        a_cat = np.fromiter((int(a["category_id"]) for a in anns), dtype=np.int64, count=len(anns))
        a_img_idx = _index_of(np.sort(img_ids), a_img, "annotations refer to image id(s) not in gt['images']")
        a_cat_idx = _index_of(np.sort(cat_ids), a_cat, "annotations refer to category id(s) not in gt['categories']")
        ann_ids = np.fromiter((int(a["id"]) for a in anns), dtype=np.int64, count=len(anns))
        dup = _duplicates(ann_ids)
        if dup.size:
            raise ValueError(f"ground truth has duplicate annotation ids, e.g. {dup[:5].tolist()}")
        area = np.fromiter((float(a["area"]) for a in anns), dtype=np.float64, count=len(anns))
        own_ignore = np.fromiter((bool(a.get("ignore", 0)) for a in anns), dtype=bool, count=len(anns))
        crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=bool, count=len(anns))

        valid = (area > 0) & (area < np.inf)
        pair = a_img_idx * n_cat + a_cat_idx
        kept = np.flatnonzero(valid)
        kept = kept[np.argsort(pair[kept], kind="stable")]
        box = None
        if iou_type == "bbox":
            box = np.array([anns[i]["bbox"] for i in kept.tolist()], dtype=np.float64).reshape(-1, 4)

        img_pos = np.empty_like(img_order)
        img_pos[img_order] = np.arange(img_order.size)
        cat_lookup = dict(zip(cat_ids.tolist(), np.argsort(cat_order).tolist(), strict=True))

        def listed_pairs(key: str) -> np.ndarray:
            out = [
                img_pos[i] * n_cat + cat_lookup[int(c)]
                for i, img in enumerate(images)
                for c in img.get(key, None) or ()
                if int(c) in cat_lookup  # lvis-api never evaluates classes outside the category list
            ]
            return np.asarray(out, dtype=np.int64)

        freq = []
        for c in cats:
            f = c.get("frequency")
            if f not in _FREQUENCIES:
                raise ValueError(f"category {c['id']} has frequency {f!r}, expected one of {_FREQUENCIES}")
            freq.append(f)
        freq_sorted = np.array(freq, dtype=object)[cat_order]
        return cls(
            gt=gt,
            img_ids=img_ids[img_order],
            img_hw=hw[img_order],
            cat_ids=cat_ids[cat_order],
            freq_groups=[np.flatnonzero(freq_sorted == f) for f in _FREQUENCIES],
            ann_index=kept,
            ann_pair=pair[kept],
            ann_cat=a_cat_idx[kept],
            ann_area=area[kept],
            ann_ignore=own_ignore[kept],
            ann_crowd=crowd[kept],
            ann_box=box,
            allowed_pairs=np.union1d(pair[kept], listed_pairs("neg_category_ids")),
            not_exhaustive_pairs=np.unique(listed_pairs("not_exhaustive_category_ids")),
            num_gt_all=np.bincount(a_cat_idx[~crowd], minlength=n_cat).astype(np.int64),
        )

    def rle(self, kept_index: int) -> dict:
        """The kept annotation's mask as a compressed RLE, converted as lvis-api's ``ann_to_rle`` does."""
        ann = self.gt["annotations"][int(self.ann_index[kept_index])]
        h, w = (int(v) for v in self.img_hw[int(self.ann_pair[kept_index]) // self.cat_ids.size])
        try:
            return segmentation_rle(ann["segmentation"], h, w)
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"annotation {ann.get('id')} has no usable segmentation: {e!r}") from e


def _duplicates(ids: np.ndarray) -> np.ndarray:
    s = np.sort(ids)
    return np.unique(s[1:][s[1:] == s[:-1]])


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``values`` in ``sorted_ids`` and whether each is there at all."""
    pos = np.searchsorted(sorted_ids, values).astype(np.int64)
    found = pos < sorted_ids.size
    found[found] = sorted_ids[pos[found]] == values[found]
    return pos, found


def _index_of(sorted_ids: np.ndarray, values: np.ndarray, message: str) -> np.ndarray:
    pos, found = _lookup(sorted_ids, values)
    if not found.all():
        unknown = np.unique(values[~found])
        raise ValueError(f"{message}: {unknown.size} id(s), e.g. {unknown[:5].tolist()}")
    return pos


# --------------------------------------------------------------------------- detections


def _validate_detections(
    detections: pd.DataFrame, iou_type: str, area_by: str, img_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """The needed columns as arrays, checked: boxes for bbox or box areas, RLEs for segm or mask areas."""
    need_box, need_rle = iou_type == "bbox" or area_by == "box", iou_type == "segm" or area_by == "mask"
    required = ["image_id", "category_id", "score"]
    required += list(BOX_COLUMNS) if need_box else []
    required += ["rle_counts"] if need_rle else []
    missing = [c for c in required if c not in detections.columns]
    if missing:
        raise ValueError(f"detections lack column(s) {missing} needed for iou_type={iou_type!r}, {area_by} areas")

    dets = {
        "image_id": _int_column(detections["image_id"], "image_id"),
        "category_id": _int_column(detections["category_id"], "category_id"),
        "score": detections["score"].to_numpy(dtype=np.float64),
    }
    if np.isnan(dets["score"]).any():
        bad = np.flatnonzero(np.isnan(dets["score"]))
        raise ValueError(f"detections have NaN scores ({bad.size} rows, first row positions {bad[:5].tolist()})")

    if need_box:
        columns = [detections[c].to_numpy() for c in BOX_COLUMNS]  # float64 later, for the rows evaluated
        finite = np.logical_and.reduce([np.isfinite(np.asarray(c, dtype=np.float64)) for c in columns])
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(f"detections have non-finite boxes ({bad.size} rows, first {bad[:5].tolist()})")
        dets.update(zip(BOX_COLUMNS, columns, strict=True))
    if need_rle:
        counts = detections["rle_counts"].to_numpy(dtype=object)
        is_rle = np.fromiter((isinstance(c, (bytes, str)) for c in counts), dtype=bool, count=counts.size)
        if not is_rle.all():
            bad = np.flatnonzero(~is_rle)
            raise ValueError(
                f"rle_counts must be bytes or str (compressed RLE); {bad.size} rows are not, "
                f"first row positions {bad[:5].tolist()}"
            )
        dets["rle_counts"] = counts

    _, known = _lookup(img_ids, dets["image_id"])
    if not known.all():
        unknown = np.unique(dets["image_id"][~known])
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


def _top_k(dets: dict[str, np.ndarray], rows: np.ndarray, key: str, k: int) -> np.ndarray:
    """Of ``rows`` (ascending), those of the ``k`` best-scored detections of each ``key`` value (ties:
    earlier row first), still ascending."""
    if rows.size == 0:
        return rows
    _, inverse, counts = np.unique(dets[key][rows], return_inverse=True, return_counts=True)
    over_at = np.flatnonzero(counts[inverse] > k)  # only groups above the cap need sorting
    if over_at.size == 0:
        return rows
    over = rows[over_at]
    group = dets[key][over]
    order = np.lexsort((over, -dets["score"][over], group))  # last key is primary
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    rank = np.arange(over.size) - np.repeat(starts, np.diff(np.r_[starts, over.size]))
    keep = np.ones(rows.size, dtype=bool)
    keep[over_at[order[rank >= k]]] = False
    return rows[keep]


def _select(
    dets: dict[str, np.ndarray], rows: np.ndarray, truth: _GroundTruth, iou_type: str, area_by: str
) -> dict[str, np.ndarray]:
    """The detections among ``rows`` that lvis-api evaluates, sorted as it walks them: by (image, category)
    pair, then score descending, then row.  Adds ``img``, ``cat`` (indices), ``pair``, ``area`` (of the box or
    the mask, as ``area_by`` says) and ``not_exhaustive``; ``row`` is the input position."""
    n_cat = truth.cat_ids.size
    img = np.searchsorted(truth.img_ids, dets["image_id"][rows])  # every image id is known (checked)
    cat, known = _lookup(truth.cat_ids, dets["category_id"][rows])
    pair = img * n_cat + cat
    # federated rule: a class neither annotated nor negative in the image is not evaluated there
    keep = np.flatnonzero(known & np.isin(pair, truth.allowed_pairs))
    rows, img, cat, pair = rows[keep], img[keep], cat[keep], pair[keep]

    box = rles = None
    if "x" in dets:
        box = np.stack([np.asarray(dets[c][rows], dtype=np.float64) for c in BOX_COLUMNS], axis=1).reshape(-1, 4)
    if "rle_counts" in dets:
        rles = _rle_dicts(dets["rle_counts"][rows], truth.img_hw[img])
    area = box[:, 2] * box[:, 3] if area_by == "box" else _mask_areas(rles)
    valid = (area > 0) & (area < np.inf)  # lvis-api's get_ann_ids: 0 < area < inf
    order = np.lexsort((rows, -dets["score"][rows], pair))
    order = order[valid[order]]
    rows = rows[order]
    out = {"row": rows, "score": dets["score"][rows], "img": img[order], "cat": cat[order], "pair": pair[order]}
    out["area"] = area[order]
    if iou_type == "bbox":
        out["box"] = box[order]
    else:
        out["rle"] = rles[order]
    out["not_exhaustive"] = np.isin(out["pair"], truth.not_exhaustive_pairs)
    return out


def _rle_dicts(counts: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """{size, counts} pairs for pycocotools, which takes masks no other way (an object array)."""
    out = np.empty(counts.size, dtype=object)
    out[:] = [{"size": [h, w], "counts": c} for c, (h, w) in zip(counts.tolist(), hw.tolist(), strict=True)]
    return out


def _mask_areas(rles: np.ndarray) -> np.ndarray:
    from pycocotools import mask as mask_utils

    out = np.zeros(rles.size, dtype=np.float64)
    # pycocotools 2.0.x's area() overflows a uint8 count beyond 255 masks per call
    for lo in range(0, rles.size, 255):
        out[lo : lo + 255] = mask_utils.area(rles[lo : lo + 255].tolist())
    return out


# --------------------------------------------------------------------------- evaluation


def _edges(truth: _GroundTruth, dets: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, kept annotation) couple of the same pair, by detection then annotation order."""
    pairs, first, count = np.unique(truth.ann_pair, return_index=True, return_counts=True)
    loc, has = _lookup(pairs, dets["pair"])
    per_det = np.zeros(loc.size, dtype=np.int64)
    per_det[has] = count[loc[has]]
    start = np.zeros(loc.size, dtype=np.int64)
    start[has] = first[loc[has]]
    edge_det = np.repeat(np.arange(per_det.size, dtype=np.int64), per_det)
    edge_gt = np.repeat(start, per_det) + lvis_match.ragged_arange(per_det)
    return edge_det, edge_gt


def _segm_iou(truth: _GroundTruth, dets: dict[str, np.ndarray], edge_det: np.ndarray, edge_gt: np.ndarray):
    """Mask IoU of each edge, one pycocotools call per (image, category) pair, whose edges are the full
    detections x annotations block in row-major order (as ``_edges`` makes them)."""
    from pycocotools import mask as mask_utils

    out = np.empty(edge_det.size, dtype=np.float64)
    if edge_det.size == 0:
        return out
    edge_pair = dets["pair"][edge_det]
    bounds = np.flatnonzero(np.r_[True, edge_pair[1:] != edge_pair[:-1], True]).tolist()
    first_det, first_gt = edge_det[bounds[:-1]].tolist(), edge_gt[bounds[:-1]].tolist()
    last_det = edge_det[np.asarray(bounds[1:]) - 1].tolist()
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        d0, g0 = first_det[k], first_gt[k]
        n_det = last_det[k] - d0 + 1  # a pair's detections are consecutive
        n_gt = (hi - lo) // n_det
        d_rles = dets["rle"][d0 : d0 + n_det].tolist()
        g_rles = [truth.rle(g) for g in range(g0, g0 + n_gt)]
        ious = mask_utils.iou(d_rles, g_rles, truth.ann_crowd[g0 : g0 + n_gt].astype(np.uint8))
        out[lo:hi] = np.asarray(ious, dtype=np.float64).ravel()
    return out


def _evaluate(truth: _GroundTruth, dets: dict[str, np.ndarray], iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """precision [T, R, K, A] and recall [T, K, A] (K in sorted category order), -1 where undefined."""
    n = dets["row"].size
    edge_det, edge_gt = _edges(truth, dets)
    if iou_type == "bbox":
        iou = lvis_match.box_iou(dets["box"][edge_det], truth.ann_box[edge_gt], truth.ann_crowd[edge_gt])
    else:
        iou = _segm_iou(truth, dets, edge_det, edge_gt)
    usable = iou >= lvis_match.IOU_THRESHOLDS[0]  # below the lowest threshold a couple never matches
    edge_det, edge_gt, iou = edge_det[usable], edge_gt[usable], iou[usable]

    lo, hi = lvis_match.AREA_RANGES[:, :1], lvis_match.AREA_RANGES[:, 1:]
    ignored = truth.ann_ignore | truth.ann_crowd
    gt_ignore = ignored[None, :] | (truth.ann_area[None, :] < lo) | (truth.ann_area[None, :] > hi)
    # the matching walks detections by pair; accumulate() wants them as lvis-api concatenates them
    order = np.lexsort((dets["row"], dets["img"], -dets["score"], dets["cat"]))
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    matched, matched_ignored = lvis_match.greedy_match(
        edge_det, edge_gt, iou, dets["pair"], n, gt_ignore, out_index=position, gt_crowd=truth.ann_crowd
    )

    # an unmatched detection outside the area range or of a not-exhaustive class is ignored
    area, not_exhaustive = dets["area"][order], dets["not_exhaustive"][order]
    dt_ignore = (area[None, :] < lo) | (area[None, :] > hi) | not_exhaustive[None, :]
    tps = matched & ~matched_ignored
    fps = ~matched & ~dt_ignore[:, None, :]
    num_gt = np.stack(
        [np.bincount(truth.ann_cat[~ig], minlength=truth.cat_ids.size) for ig in gt_ignore], axis=1
    ).astype(np.int64)
    return lvis_match.accumulate(tps, fps, dets["cat"][order], num_gt)


def _masked_mean(s: np.ndarray) -> float:
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _summarize(precision: np.ndarray, recall: np.ndarray, freq_groups: Sequence[np.ndarray]) -> dict[str, float]:
    """lvis-api's ``LVISEval.summarize`` on precision [T, R, K, A] and recall [T, K, A]."""
    iou_thrs = lvis_match.IOU_THRESHOLDS
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


def _per_class(truth: _GroundTruth, dets: dict[str, np.ndarray], precision: np.ndarray) -> pd.DataFrame:
    p = precision[:, :, :, 0]  # area "all"
    valid = p > -1
    n_valid = valid.sum(axis=(0, 1))
    total = np.where(valid, p, 0.0).sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(n_valid > 0, total / np.maximum(n_valid, 1), np.nan)
    n_cat = truth.cat_ids.size
    return pd.DataFrame(
        {
            "category_id": truth.cat_ids.astype(np.int64),
            "ap": ap.astype(np.float64),
            "num_gt": truth.num_gt_all,
            "num_dets": np.bincount(dets["cat"], minlength=n_cat).astype(np.int64),
        }
    )


# --------------------------------------------------------------------------- files and CLI


def load_detections(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read detections from Parquet (the columnar format above) or an LVIS results json.

    A results json is a list of ``{image_id, category_id, score, bbox?, segmentation?}`` where
    segmentation is a compressed RLE ``{"size": [h, w], "counts": str}``.  The frame gets the box columns
    when every record has a bbox (ValueError when only some have one: lvis-api would size them all by the
    first one's kind), and ``rle_counts`` plus ``rle_height``/``rle_width`` when every record has a
    segmentation.  ``columns`` limits what is read from a Parquet file (those that exist).
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1" or path.suffix.lower() in (".parquet", ".pq"):
        if columns is None:
            return pd.read_parquet(path)
        import pyarrow.parquet as pq

        present = set(pq.read_schema(path).names)
        return pd.read_parquet(path, columns=[c for c in columns if c in present])
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
    has_box = [i for i, r in enumerate(records) if "bbox" in r]
    if has_box and len(has_box) < len(records):
        i = next(i for i, r in enumerate(records) if "bbox" not in r)
        raise ValueError(
            f"detection #{i} has no bbox but detection #{has_box[0]} has one: give every detection a bbox or none"
        )
    if has_box:
        boxes = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(len(records), 4)
        for j, c in enumerate(BOX_COLUMNS):
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


def check_rle_sizes(dets: pd.DataFrame, gt: dict) -> None:
    if "rle_height" not in dets.columns or "rle_width" not in dets.columns:
        return
    img = pd.DataFrame(
        {
            "image_id": [int(i["id"]) for i in gt["images"]],
            "height": [int(i["height"]) for i in gt["images"]],
            "width": [int(i["width"]) for i in gt["images"]],
        }
    )
    joined = dets[["image_id", "rle_height", "rle_width"]].merge(img, on="image_id", how="inner")
    bad = joined[(joined["rle_height"] != joined["height"]) | (joined["rle_width"] != joined["width"])]
    if len(bad):
        r = bad.iloc[0]
        raise ValueError(
            f"segmentation size {[int(r.rle_height), int(r.rle_width)]} of a detection on image {int(r.image_id)} "
            f"differs from the image size {[int(r.height), int(r.width)]} in the ground truth ({len(bad)} detections)"
        )


def lvis_results(detections: pd.DataFrame, image_sizes: Mapping[int, tuple[int, int]] | None = None) -> list[dict]:
    """Detections as an LVIS results list (what the LVIS evaluation server takes):
    ``{image_id, category_id, score, bbox: [x, y, w, h]}`` plus ``segmentation: {size: [h, w], counts: str}``
    when the frame has ``rle_counts``.  A compressed RLE does not hold its mask size: it comes from
    ``image_sizes`` (image id -> (height, width)), or from ``rle_height``/``rle_width`` columns.

    Numbers are written as the float64 of the stored values, so that reading the file back gives the same
    detections.  Raises ValueError for missing columns or an image without a size.
    """
    missing = [c for c in ("image_id", "category_id", "score", *BOX_COLUMNS) if c not in detections.columns]
    if missing:
        raise ValueError(f"detections lack column(s) {missing} needed for an LVIS results file")
    image_id = _int_column(detections["image_id"], "image_id").tolist()
    category_id = _int_column(detections["category_id"], "category_id").tolist()
    score = detections["score"].to_numpy(dtype=np.float64)
    if np.isnan(score).any():
        raise ValueError(f"detections have NaN scores ({int(np.isnan(score).sum())} rows)")
    boxes = np.stack([detections[c].to_numpy(dtype=np.float64) for c in BOX_COLUMNS], axis=1).tolist()
    records = [
        {"image_id": i, "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(image_id, category_id, boxes, score.tolist(), strict=True)
    ]
    if "rle_counts" not in detections.columns:
        return records
    if {"rle_height", "rle_width"} <= set(detections.columns):
        sizes = np.stack([detections["rle_height"], detections["rle_width"]], axis=1).astype(np.int64).tolist()
    else:
        if image_sizes is None:
            raise ValueError("masks need their image sizes: pass the ground truth (image heights and widths)")
        lookup = {int(k): [int(v[0]), int(v[1])] for k, v in image_sizes.items()}
        unknown = sorted(set(image_id) - lookup.keys())
        if unknown:
            raise ValueError(f"detections refer to {len(unknown)} image id(s) without a size, e.g. {unknown[:5]}")
        sizes = [lookup[i] for i in image_id]
    for rec, counts, size in zip(records, detections["rle_counts"].tolist(), sizes, strict=True):
        if not isinstance(counts, (bytes, str)):
            raise ValueError(f"rle_counts must be bytes or str (compressed RLE), got {type(counts).__name__}")
        rec["segmentation"] = {"size": size, "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
    return records


def export_lvis_results(
    detections: pd.DataFrame, path: str | Path, image_sizes: Mapping[int, tuple[int, int]] | None = None
) -> int:
    """Write ``lvis_results(detections, image_sizes)`` as json to ``path``, atomically; returns the count."""
    from lst.io import write_text_atomic

    records = lvis_results(detections, image_sizes)
    write_text_atomic(path, json.dumps(records, separators=(",", ":")))
    return len(records)


def image_sizes(gt: dict) -> dict[int, tuple[int, int]]:
    """image id -> (height, width) of an LVIS ground-truth dict."""
    return {int(img["id"]): (int(img["height"]), int(img["width"])) for img in gt["images"]}


def lvis_api_det_area(detections: pd.DataFrame, iou_type: str) -> str:
    """The ``det_area`` with which ``evaluate_lvis`` sizes detections as lvis-api's ``LVISResults`` does: by
    the box (``w * h``) when the results carry boxes, by the mask otherwise.  (lvis-api decides on the first
    result; ``load_detections`` refuses files where only some have a box.)  Parquet detections are judged as
    their LVIS results json (``export_lvis_results``), which has the boxes of the frame."""
    if iou_type == "bbox" or set(BOX_COLUMNS) <= set(detections.columns):
        return "box"
    return "mask"
