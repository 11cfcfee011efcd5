"""LVIS evaluation speed: lvis-api (lvis 0.5.3) against lst.lvis_eval, in one run, loading included.

    python benchmarks/eval_speed.py [--images 5000] [--categories 1230] [--dets-per-image 300]
                                    [--segm-images 1000] [--skip-bbox] [--skip-segm] [--skip-lvis-api]

The case is LVIS-like: a long-tailed class distribution (rare/common/frequent in LVIS v0.5's proportions),
about 12 annotations per image over a few classes, neg_category_ids and not_exhaustive_category_ids on
every image, annotations with polygon masks.  Detections are jittered copies of the ground truth (right
class and confused classes, high scores) plus random boxes of random classes, filled up to
``--dets-per-image`` per image; one image in ten gets 10% more, so that the 300 cut matters.

Each side loads its inputs from disk inside the timed part: lvis-api reads the annotation json and a
results json (LVIS(gt) + LVISResults + LVISEval.run()); lst reads the annotation json and the detections
as Parquet (json.load + load_detections + evaluate_lvis).  The metrics of both are compared to 1e-6.
The bbox case uses the full size; segm (masks as RLE, which lvis-api evaluates much more slowly) uses the
first ``--segm-images`` images.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils

from lst.lvis_eval import METRIC_KEYS, evaluate_lvis, load_detections

# LVIS v0.5: 454 rare, 461 common, 315 frequent classes out of 1230
FREQ_SHARE = {"r": 454 / 1230, "c": 461 / 1230, "f": 315 / 1230}


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[float]:
    """An octagon-ish polygon inscribed in the box (corners cut at random), as LVIS polygons are."""
    c = rng.uniform(0.05, 0.3, size=8)
    pts = [
        (x + c[0] * w, y),
        (x + w - c[1] * w, y),
        (x + w, y + c[2] * h),
        (x + w, y + h - c[3] * h),
        (x + w - c[4] * w, y + h),
        (x + c[5] * w, y + h),
        (x, y + h - c[6] * h),
        (x, y + c[7] * h),
    ]
    return [round(float(v), 2) for p in pts for v in p]


def make_gt(n_images: int, n_categories: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # class ids 1..K; frequency by rank, as in LVIS where the frequent classes hold most instances
    n_f = round(n_categories * FREQ_SHARE["f"])
    n_c = round(n_categories * FREQ_SHARE["c"])
    freq = ["f"] * n_f + ["c"] * n_c + ["r"] * (n_categories - n_f - n_c)
    order = rng.permutation(n_categories)  # class ids are not sorted by frequency
    cat_ids = order + 1
    categories = [
        {"id": int(cat_ids[rank]), "name": f"class{int(cat_ids[rank])}", "frequency": freq[rank]}
        for rank in np.argsort(cat_ids)
    ]
    categories.sort(key=lambda c: c["id"])
    weight = 1.0 / (np.arange(n_categories) + 1.0) ** 1.1  # Zipf-like long tail over ranks
    weight /= weight.sum()

    images, annotations = [], []
    for i in range(n_images):
        img_id = 10 * i + 7
        W, H = int(rng.choice([640, 480, 500, 427])), int(rng.choice([480, 640, 375, 333]))
        n_pos = int(rng.integers(1, 7))
        pos = np.unique(cat_ids[rng.choice(n_categories, size=n_pos, p=weight)])
        neg_pool = np.setdiff1d(cat_ids[rng.choice(n_categories, size=12, p=weight)], pos)
        neg = neg_pool[: int(rng.integers(0, 9))]
        nel = [int(c) for c in pos if rng.random() < 0.15]
        images.append(
            {
                "id": img_id,
                "height": H,
                "width": W,
                "neg_category_ids": [int(c) for c in neg],
                "not_exhaustive_category_ids": nel,
            }
        )
        for c in pos:
            for _ in range(int(min(rng.geometric(0.3), 30))):
                side = math.exp(rng.uniform(math.log(6), math.log(min(W, H) * 0.9)))
                aspect = math.exp(rng.uniform(-0.7, 0.7))
                w = min(side * aspect, W - 2)
                h = min(side / aspect, H - 2)
                x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
                poly = _polygon(rng, x, y, w, h)
                rle = mask_utils.merge(mask_utils.frPyObjects([poly], H, W))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": img_id,
                        "category_id": int(c),
                        "segmentation": [poly],
                        "area": float(mask_utils.area(rle)),
                        "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
                    }
                )
    return {"images": images, "annotations": annotations, "categories": categories}


def make_detections(gt: dict, dets_per_image: int, with_masks: bool, seed: int = 1) -> pd.DataFrame:
    """Detections as columns (bbox, and RLE masks of jittered polygons when ``with_masks``)."""
    rng = np.random.default_rng(seed)
    cat_ids = np.array([c["id"] for c in gt["categories"]])
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cols: dict[str, list] = {k: [] for k in ("image_id", "category_id", "score", "x", "y", "w", "h", "rle_counts")}
    for img in gt["images"]:
        W, H, img_id = img["width"], img["height"], img["id"]
        target = dets_per_image if rng.random() > 0.1 else int(dets_per_image * 1.1)
        boxes, classes, scores = [], [], []
        evaluated = [a["category_id"] for a in by_image.get(img_id, [])] + img["neg_category_ids"]
        for a in by_image.get(img_id, []):
            x, y, w, h = a["bbox"]
            for _ in range(int(rng.integers(1, 5))):
                s = rng.choice([0.02, 0.06, 0.12, 0.25])
                dx, dy = rng.normal(0, s * w), rng.normal(0, s * h)
                dw, dh = w * math.exp(rng.normal(0, s)), h * math.exp(rng.normal(0, s))
                confused = rng.random() < 0.25
                c = int(rng.choice(evaluated if rng.random() < 0.5 else cat_ids)) if confused else a["category_id"]
                boxes.append((x + dx, y + dy, dw, dh))
                classes.append(c)
                scores.append(rng.beta(4, 2) if not confused else rng.beta(2, 3))
        n_random = max(target - len(boxes), 0)
        side = np.exp(rng.uniform(math.log(4), math.log(min(W, H) * 0.8), size=n_random))
        aspect = np.exp(rng.uniform(-0.8, 0.8, size=n_random))
        w, h = side * aspect, side / aspect
        x, y = rng.uniform(-10, W - w / 2), rng.uniform(-10, H - h / 2)
        pool = evaluated if evaluated else list(cat_ids)
        from_pool = rng.random(n_random) < 0.35
        rand_cls = np.where(from_pool, rng.choice(pool, size=n_random), rng.choice(cat_ids, size=n_random))
        boxes.extend(zip(x, y, w, h, strict=True))
        classes.extend(rand_cls.tolist())
        scores.extend(rng.beta(1.2, 5, size=n_random).tolist())
        b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        # clip to the image, as a detector's boxes are
        x0, y0 = np.clip(b[:, 0], 0, W - 1), np.clip(b[:, 1], 0, H - 1)
        x1, y1 = np.clip(b[:, 0] + b[:, 2], x0 + 1, W), np.clip(b[:, 1] + b[:, 3], y0 + 1, H)
        if with_masks:
            polys = [_polygon(rng, *v) for v in zip(x0, y0, x1 - x0, y1 - y0, strict=True)]
            rles = [mask_utils.merge(mask_utils.frPyObjects([p], H, W)) for p in polys]
            cols["rle_counts"].extend(r["counts"] for r in rles)
            mb = mask_utils.toBbox(rles).reshape(-1, 4) if rles else np.zeros((0, 4))
            x0, y0, x1, y1 = mb[:, 0], mb[:, 1], mb[:, 0] + mb[:, 2], mb[:, 1] + mb[:, 3]
        else:
            cols["rle_counts"].extend([b""] * len(b))
        cols["image_id"].append(np.full(len(b), img_id, dtype=np.int64))
        cols["category_id"].append(np.asarray(classes, dtype=np.int64))
        cols["score"].append(np.asarray(scores, dtype=np.float32))
        for k, v in zip("xywh", (x0, y0, x1 - x0, y1 - y0), strict=True):
            cols[k].append(np.asarray(v, dtype=np.float32))
    frame = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items() if k != "rle_counts"})
    frame["rle_counts"] = pd.Series(cols["rle_counts"], dtype=object)
    return frame


def results_json(gt: dict, dets: pd.DataFrame, iou_type: str) -> list[dict]:
    """The LVIS results list of the same detections (segm results without bbox: areas from masks)."""
    hw = {img["id"]: [img["height"], img["width"]] for img in gt["images"]}
    image_id = dets["image_id"].tolist()
    category_id = dets["category_id"].tolist()
    score = dets["score"].astype(np.float64).tolist()
    if iou_type == "bbox":
        boxes = dets[["x", "y", "w", "h"]].to_numpy(np.float64).tolist()
        return [
            {"image_id": i, "category_id": c, "score": s, "bbox": b}
            for i, c, s, b in zip(image_id, category_id, score, boxes, strict=True)
        ]
    return [
        {"image_id": i, "category_id": c, "score": s, "segmentation": {"size": hw[i], "counts": r.decode()}}
        for i, c, s, r in zip(image_id, category_id, score, dets["rle_counts"].tolist(), strict=True)
    ]


def run_lvis_api(gt_path: Path, dets_path: Path, iou_type: str) -> tuple[float, dict[str, float]]:
    from lvis import LVIS, LVISEval, LVISResults

    if not hasattr(np, "float"):
        np.float = float  # lvis 0.5.3's accumulate() uses np.float, gone in numpy 2 (benchmark-only shim)
    gc.collect()
    start = time.perf_counter()
    lvis_gt = LVIS(str(gt_path))
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, str(dets_path), max_dets=300), iou_type)
    ev.run()
    elapsed = time.perf_counter() - start
    return elapsed, {k: float(v) for k, v in ev.get_results().items()}


def run_lst(gt_path: Path, dets_path: Path, iou_type: str) -> tuple[float, float, dict[str, float]]:
    gc.collect()
    start = time.perf_counter()
    with open(gt_path, encoding="utf-8") as f:
        gt = json.load(f)
    dets = load_detections(dets_path)
    loaded = time.perf_counter() - start
    result = evaluate_lvis(gt, dets, iou_type, max_dets_per_image=300)
    elapsed = time.perf_counter() - start
    return elapsed, loaded, result.metrics


def bench(label: str, gt: dict, dets: pd.DataFrame, iou_type: str, tmp: Path, lvis_api: bool) -> bool:
    gt_path, pq_path, json_path = tmp / f"{label}_gt.json", tmp / f"{label}.parquet", tmp / f"{label}.json"
    gt_path.write_text(json.dumps(gt))
    columns = ["image_id", "category_id", "score"] + (["x", "y", "w", "h"] if iou_type == "bbox" else ["rle_counts"])
    dets[columns].to_parquet(pq_path)
    n_imgs, n_anns = len(gt["images"]), len(gt["annotations"])
    print(
        f"[{label}] {n_imgs} images, {len(gt['categories'])} classes, {n_anns} annotations, "
        f"{len(dets)} detections ({len(dets) / n_imgs:.0f}/image); gt json {gt_path.stat().st_size / 1e6:.1f} MB",
        flush=True,
    )
    t_lst, t_load, m_lst = run_lst(gt_path, pq_path, iou_type)
    print(f"[{label}] lst.lvis_eval: {t_lst:.2f} s (loading the two files: {t_load:.2f} s)", flush=True)
    if not lvis_api:
        print(json.dumps(m_lst))
        return True
    json_path.write_text(json.dumps(results_json(gt, dets, iou_type)))
    t_api, m_api = run_lvis_api(gt_path, json_path, iou_type)
    print(f"[{label}] lvis-api:      {t_api:.2f} s (loading included)", flush=True)
    diff = max(abs(m_lst[k] - m_api[k]) for k in METRIC_KEYS)
    agree = list(m_lst) == list(m_api) and diff <= 1e-6
    print(f"[{label}] speed-up lvis-api / lst: {t_api / t_lst:.1f}x", flush=True)
    print(f"[{label}] metrics agree to 1e-6: {agree} (max abs difference {diff:.2e})", flush=True)
    print(f"[{label}] " + "  ".join(f"{k} {m_lst[k]:.4f}" for k in METRIC_KEYS), flush=True)
    return agree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--categories", type=int, default=1230)
    parser.add_argument("--dets-per-image", type=int, default=300)
    parser.add_argument("--segm-images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bbox", action="store_true")
    parser.add_argument("--skip-segm", action="store_true")
    parser.add_argument("--skip-lvis-api", action="store_true", help="time lst only")
    args = parser.parse_args()

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work on the machine slows both sides)")
    ok = True
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cases = (("bbox", args.images, args.skip_bbox), ("segm", args.segm_images, args.skip_segm))
        for iou_type, images, skip in cases:
            if skip:
                continue
            t0 = time.perf_counter()
            gt = make_gt(images, args.categories, args.seed)
            dets = make_detections(gt, args.dets_per_image, with_masks=iou_type == "segm", seed=args.seed + 1)
            print(f"[{iou_type}] generated the case in {time.perf_counter() - t0:.0f} s", flush=True)
            ok &= bench(iou_type, gt, dets, iou_type, tmp, not args.skip_lvis_api)
            del gt, dets
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
