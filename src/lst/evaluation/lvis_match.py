"""The array core of the LVIS evaluator: IoU, greedy matching and accumulation, vectorized with numpy.

These functions know nothing of dicts or files: ``lst.evaluation.lvis_eval`` prepares index arrays (image, category,
area, ignore flags) and calls them.  Each reproduces one step of lvis-api's ``LVISEval`` (lvis 0.5.3,
``lvis/eval.py``) exactly, the floating-point operations included, so that the numbers are the same:

* ``box_iou``: pycocotools' ``bbIou``, element-wise on (detection, ground truth) pairs;
* ``greedy_match``: ``evaluate_img``'s matching.  lvis-api walks the detections of one (image, category)
  in score order and gives each the best still-free ground truth with IoU >= threshold (non-ignored ones
  first, the last one in annotation order among equal IoUs).  Here the walk is done for all (image,
  category) pairs, area ranges and IoU thresholds at once, one detection rank per step: a pair's n-th
  detection only depends on its earlier ones, never on other pairs.  Crowd ground truth (COCO) is never
  used up, as in pycocotools' ``COCOeval.evaluateImg`` (lvis-api has no crowd);
* ``accumulate``: ``accumulate``'s precision/recall, with its 101-point interpolation, per category with
  every area range and IoU threshold in one array.
"""

from __future__ import annotations

import numpy as np

# lvis-api's Params, built the same way so that the thresholds are the same floats
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=np.float64)


def ragged_arange(counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(c)`` for every ``c`` in ``counts``."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def box_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of ``dt[i]`` with ``gt[i]`` (xywh rows, float64), as pycocotools computes it; where ``crowd[i]``,
    the intersection over the detection's area."""
    dx, dy, dw, dh = dt.T
    gx, gy, gw, gh = gt.T
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    overlap = (w > 0) & (h > 0)  # pycocotools leaves 0 where either side does not overlap
    inter = w * h
    union = dw * dh + gw * gh - inter
    if crowd is not None:
        union = np.where(crowd, dw * dh, union)
    out = np.zeros(len(dt), dtype=np.float64)
    np.divide(inter, union, out=out, where=overlap)
    return out


def greedy_match(
    edge_det: np.ndarray,
    edge_gt: np.ndarray,
    edge_iou: np.ndarray,
    det_pair: np.ndarray,
    num_dets: int,
    gt_ignore: np.ndarray,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    out_index: np.ndarray | None = None,
    gt_crowd: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """lvis-api's per-(image, category) greedy matching, for all pairs, area ranges and thresholds at once.

    Detections are indexed ``0..num_dets-1`` in lvis-api's order within a pair (pair, then score
    descending, then input order) and ``det_pair`` gives each detection's pair key (non-decreasing).
    The edges are the (detection, ground truth) couples of the same pair with IoU >= the lowest threshold
    (others can never match), sorted by detection, then by the ground truth's annotation order.
    ``gt_ignore`` is [areas, num_gt]: the ground truth that each area range ignores; ``gt_crowd`` [num_gt]
    the crowd regions, which stay free once matched (they should be ignored in every area range too).

    Returns ``matched`` and ``matched_ignored``, both bool [areas, thresholds, num_dets]: whether the
    detection was matched, and whether what it matched is an ignored ground truth.  Detection ``i`` is at
    ``out_index[i]`` there (default ``i``): the caller's next order, without copying the arrays.
    """
    n_area, n_gt = gt_ignore.shape
    n_thr = len(iou_thresholds)
    lanes = n_area * n_thr  # one independent matching per (area range, threshold)
    matched = np.zeros((lanes, num_dets), dtype=bool)
    matched_ignored = np.zeros((lanes, num_dets), dtype=bool)
    if edge_det.size == 0:
        return matched.reshape(n_area, n_thr, num_dets), matched_ignored.reshape(n_area, n_thr, num_dets)

    # a detection's step = its rank among the detections of its pair that have an edge at all
    dets_with_edges = np.unique(edge_det)
    pair_of = det_pair[dets_with_edges]
    first = np.r_[True, pair_of[1:] != pair_of[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(pair_of.size), 0))
    step_of_det = np.zeros(num_dets, dtype=np.int64)
    step_of_det[dets_with_edges] = np.arange(pair_of.size) - group_start
    edge_step = step_of_det[edge_det]
    order = np.argsort(edge_step, kind="stable")  # keeps edges grouped by detection within a step
    edge_det, edge_gt, edge_iou, edge_step = edge_det[order], edge_gt[order], edge_iou[order], edge_step[order]
    bounds = np.searchsorted(edge_step, np.arange(int(edge_step[-1]) + 2))

    thr = np.tile(iou_thresholds, n_area)[:, None]  # lane = area * n_thr + threshold
    ignore_lanes = np.repeat(gt_ignore, n_thr, axis=0)  # [lanes, n_gt]
    taken = np.zeros((lanes, n_gt), dtype=bool)
    for s in range(len(bounds) - 1):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        det, g, iou = edge_det[lo:hi], edge_gt[lo:hi], edge_iou[lo:hi]
        new_det = np.r_[True, det[1:] != det[:-1]]
        starts = np.flatnonzero(new_det)
        group = np.cumsum(new_det) - 1  # edge -> its detection within this step
        free = (iou[None, :] >= thr) & ~taken[:, g]  # [lanes, edges]
        ign = ignore_lanes[:, g]
        regular = free & ~ign
        # a free non-ignored ground truth always wins over an ignored one
        has_regular = np.logical_or.reduceat(regular, starts, axis=1)
        chosen = np.where(has_regular[:, group], regular, free & ign)
        value = np.where(chosen, iou[None, :], -1.0)
        best = np.maximum.reduceat(value, starts, axis=1)
        # among equal IoUs lvis-api keeps the last ground truth it looked at
        is_best = chosen & (value == best[:, group])
        winner = np.maximum.reduceat(np.where(is_best, np.arange(hi - lo)[None, :], -1), starts, axis=1)
        lane, k = np.nonzero(winner >= 0)
        e = winner[lane, k]
        used_up = ~gt_crowd[g[e]] if gt_crowd is not None else np.ones(e.size, dtype=bool)
        taken[lane[used_up], g[e][used_up]] = True
        out = det[starts[k]] if out_index is None else out_index[det[starts[k]]]
        matched[lane, out] = True
        matched_ignored[lane, out] = ign[lane, e]
    return matched.reshape(n_area, n_thr, num_dets), matched_ignored.reshape(n_area, n_thr, num_dets)


def _min_count_for_recall(num_gt: np.ndarray, recall_thresholds: np.ndarray) -> np.ndarray:
    """[..., R]: the least integer k with ``float(k) / num_gt >= r``, the float division lvis-api makes.

    lvis-api finds each recall threshold with ``searchsorted(tp / num_gt, r)``; since ``tp`` counts are
    integers and the division is monotone, that is the first position where ``tp >= k``.
    """
    n = np.asarray(num_gt, dtype=np.float64)[..., None]
    r = recall_thresholds
    k = np.ceil(r * n)
    for _ in range(2):  # ceil(r * n) is off by at most one after rounding; settle it on the real test
        k = np.where((k > 0) & ((k - 1) / n >= r), k - 1, k)
        k = np.where(k / n < r, k + 1, k)
    return k.astype(np.int64)


def _first_reaching(tp: np.ndarray, need: np.ndarray) -> np.ndarray:
    """[A, T, R]: for each row ``tp[a, t]`` (non-decreasing counts) the first position with a count >=
    ``need[a, r]`` (the row's length where none)."""
    n_area, n_thr, n = tp.shape
    if n_area * n_thr * n > 1 << 16:  # long rows: one binary search per row, no copy
        pos = np.empty((n_area, n_thr, need.shape[1]), dtype=np.int64)
        for a in range(n_area):
            for t in range(n_thr):
                pos[a, t] = np.searchsorted(tp[a, t], need[a], side="left")
        return pos
    # short rows: one search over all rows, kept apart by offsets larger than any count
    step = (np.arange(n_area * n_thr, dtype=np.float64) * (n + 1)).reshape(n_area, n_thr, 1)
    query = np.minimum(need[:, None, :], n + 1) + step
    pos = np.searchsorted((tp + step).ravel(), query.ravel(), side="left").reshape(query.shape)
    return pos - (np.arange(n_area * n_thr, dtype=np.int64) * n).reshape(n_area, n_thr, 1)


def accumulate(
    tps: np.ndarray,
    fps: np.ndarray,
    det_cat: np.ndarray,
    num_gt: np.ndarray,
    recall_thresholds: np.ndarray = RECALL_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """lvis-api's ``accumulate``: precision [T, R, K, A] and recall [T, K, A], -1 where a (category, area)
    has no non-ignored ground truth.

    ``tps``/``fps`` are bool [A, T, N] over detections sorted as lvis-api concatenates them (category, then
    score descending, then image, then input order), ``det_cat`` their category index (non-decreasing),
    ``num_gt`` [K, A] the non-ignored ground truth per category and area range.
    """
    n_area, n_thr, _ = tps.shape
    n_cat = num_gt.shape[0]
    n_rec = len(recall_thresholds)
    precision = -np.ones((n_thr, n_rec, n_cat, n_area))
    recall = -np.ones((n_thr, n_cat, n_area))
    bounds = np.searchsorted(det_cat, np.arange(n_cat + 1))
    need = _min_count_for_recall(np.maximum(num_gt, 1), recall_thresholds)  # [K, A, R]
    eps = np.spacing(1)
    for k in np.flatnonzero((num_gt > 0).any(axis=1)):
        areas = np.flatnonzero(num_gt[k] > 0)
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        n = hi - lo
        if n == 0:  # ground truth but no detection: nothing recalled
            precision[:, :, k, areas] = 0.0
            recall[:, k, areas] = 0.0
            continue
        # counts as floats, as lvis-api has them (exact: integers below 2**53)
        tp = np.cumsum(tps[:, :, lo:hi], axis=2, dtype=np.float64)  # [A, T, n]
        fp = np.cumsum(fps[:, :, lo:hi], axis=2, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rec = tp[:, :, -1] / num_gt[k].astype(np.float64)[:, None]  # [A, T]
        pr = tp / (fp + tp + eps)
        pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]  # best precision at any higher recall
        pos = _first_reaching(tp, need[k])
        prec = np.where(pos < n, np.take_along_axis(pr, np.minimum(pos, n - 1), axis=2), 0.0)  # [A, T, R]
        precision[:, :, k, areas] = prec[areas].transpose(1, 2, 0)
        recall[:, k, areas] = rec[areas].T
    return precision, recall
