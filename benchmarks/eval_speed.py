"""LVIS evaluation speed: lvis-api (lvis 0.5.3) against lst.evaluation.lvis_eval, in one run, loading included.

    python benchmarks/eval_speed.py [--images 5000] [--categories 1230] [--dets-per-image 300]
                                    [--segm-images 1000] [--skip-bbox] [--skip-segm] [--skip-lvis-api]
                                    [--v1-images N [N ...]]

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

``--v1-images N1 N2 ...`` adds the cost at LVIS v1 val scale (19,809 images, 1,203 classes, segm,
``--dets-per-image`` detections per image): the first N1, N2, ... images of one generated case, with
results written as detectron2 saves them (a json with bbox and segmentation per detection) and as
``detections.parquet``.  ``lst-eval`` (on the Parquet and on the json) and lvis-api (on the json) each run
in a process of their own, which reports its time (loading included, interpreter start excluded) and its
peak resident memory (VmHWM of /proc/self/status: a child's ru_maxrss would count the parent's memory at
the fork).  Sizes below 19,809 are extrapolated to it by a straight line through the measured sizes; the
output says which figures are measured and which extrapolated.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils

from lst.cli.lst_eval import main as lst_eval
from lst.evaluation.lvis_eval import METRIC_KEYS, evaluate_lvis, load_detections
from lst.testing import lvis_results

# LVIS v0.5: 454 rare, 461 common, 315 frequent classes out of 1230
FREQ_SHARE = {"r": 454 / 1230, "c": 461 / 1230, "f": 315 / 1230}
# LVIS v1: 337 rare, 461 common, 405 frequent classes out of 1203; val has 19,809 images
V1_FREQ_SHARE = {"r": 337 / 1203, "c": 461 / 1203, "f": 405 / 1203}
V1_CATEGORIES, V1_VAL_IMAGES = 1203, 19_809


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


def make_gt(n_images: int, n_categories: int, seed: int = 0, shares: dict[str, float] = FREQ_SHARE) -> dict:
    """The first images are the same whatever ``n_images`` (the generator draws image after image)."""
    rng = np.random.default_rng(seed)
    # class ids 1..K; frequency by rank, as in LVIS where the frequent classes hold most instances
    n_f = round(n_categories * shares["f"])
    n_c = round(n_categories * shares["c"])
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
    print(f"[{label}] lst.evaluation.lvis_eval: {t_lst:.2f} s (loading the two files: {t_load:.2f} s)", flush=True)
    if not lvis_api:
        print(json.dumps(m_lst))
        return True
    json_path.write_text(json.dumps(lvis_results(gt, dets, iou_type)))
    t_api, m_api = run_lvis_api(gt_path, json_path, iou_type)
    print(f"[{label}] lvis-api:      {t_api:.2f} s (loading included)", flush=True)
    diff = max(abs(m_lst[k] - m_api[k]) for k in METRIC_KEYS)
    agree = list(m_lst) == list(m_api) and diff <= 1e-6
    print(f"[{label}] speed-up lvis-api / lst: {t_api / t_lst:.1f}x", flush=True)
    print(f"[{label}] metrics agree to 1e-6: {agree} (max abs difference {diff:.2e})", flush=True)
    print(f"[{label}] " + "  ".join(f"{k} {m_lst[k]:.4f}" for k in METRIC_KEYS), flush=True)
    return agree


# --------------------------------------------------------------------------- LVIS v1 val scale, one process each

V1_RUNS = (("lst-eval", "Parquet"), ("lst-eval", "json"), ("lvis-api", "json"))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(tool: str, gt_path: str, dets_path: str) -> None:
    """Run one tool (segm) in this process; print one json line: seconds, peak MiB, metrics."""
    if tool == "lvis-api":
        seconds, metrics = run_lvis_api(Path(gt_path), Path(dets_path), "segm")
    elif tool == "lst-eval":
        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            rc = lst_eval(["--gt", gt_path, "--dets", dets_path, "--iou-type", "segm"])
        seconds = time.perf_counter() - start
        if rc != 0:
            raise SystemExit(f"lst-eval exited with {rc}")
        metrics = json.loads(out.getvalue())
    else:  # the imports alone: the floor of every process here
        seconds, metrics = 0.0, {}
    print(json.dumps({"seconds": seconds, "peak_mib": peak_rss_mib(), "metrics": metrics}))


def in_own_process(tool: str, gt_path: Path, dets_path: Path) -> dict:
    cmd = [sys.executable, __file__, "--measure", tool, "--gt", str(gt_path), "--dets", str(dets_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} on {dets_path} failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_v1_files(gt: dict, dets: pd.DataFrame, n: int, tmp: Path) -> dict[str, Path]:
    """The first ``n`` images: ground truth json, detections.parquet and detectron2's results json."""
    images = gt["images"][:n]
    ids = {img["id"] for img in images}
    sub_gt = {
        "images": images,
        "annotations": [a for a in gt["annotations"] if a["image_id"] in ids],
        "categories": gt["categories"],
    }
    sub_dets = dets[dets["image_id"].isin(ids)].reset_index(drop=True)
    paths = {"gt": tmp / f"v1_{n}_gt.json", "Parquet": tmp / f"v1_{n}.parquet", "json": tmp / f"v1_{n}.json"}
    paths["gt"].write_text(json.dumps(sub_gt))
    sub_dets.to_parquet(paths["Parquet"])
    paths["json"].write_text(json.dumps(lvis_results(sub_gt, sub_dets, "segm", with_bbox=True)))
    mb = {k: f"{v.stat().st_size / 1e6:.0f} MB" for k, v in paths.items()}
    print(
        f"[v1] {n} images: {len(sub_gt['annotations'])} annotations, {len(sub_dets)} detections; "
        f"gt json {mb['gt']}, detections.parquet {mb['Parquet']}, results json {mb['json']}",
        flush=True,
    )
    return paths


def v1_row(images: int, label: str, figures: dict[tuple[str, str], tuple[float, float]]) -> str:
    cells = [f"{figures[run][0]:8.1f} s {figures[run][1]:7.0f} MiB" for run in V1_RUNS]
    t_lst, m_lst = figures[V1_RUNS[0]]
    t_api, m_api = figures[V1_RUNS[2]]
    return f"{images:>6} {label:<12} " + " | ".join(cells) + f" | {t_api / t_lst:5.1f}x {m_api / m_lst:5.1f}x"


def v1_scale(sizes: list[int], dets_per_image: int, seed: int, tmp: Path) -> bool:
    """segm cost of lst-eval and lvis-api at the given sizes, extrapolated to LVIS v1 val; True if the
    metrics of every run agree with lvis-api's to 1e-6."""
    t0 = time.perf_counter()
    gt = make_gt(max(sizes), V1_CATEGORIES, seed, V1_FREQ_SHARE)
    dets = make_detections(gt, dets_per_image, with_masks=True, seed=seed + 1)
    print(f"[v1] generated {max(sizes)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    baseline = in_own_process("imports", Path(), Path())["peak_mib"]
    measured, agree = {}, True
    for n in sorted(sizes):
        paths = write_v1_files(gt, dets, n, tmp)
        runs = {(tool, kind): in_own_process(tool, paths["gt"], paths[kind]) for tool, kind in V1_RUNS}
        reference = runs[V1_RUNS[2]]["metrics"]
        for run in V1_RUNS[:2]:
            diff = max(abs(runs[run]["metrics"][k] - reference[k]) for k in METRIC_KEYS)
            agree &= diff <= 1e-6
            print(f"[v1] {n} images: {run[0]} on the {run[1]} vs lvis-api: max abs metric difference {diff:.1e}")
        measured[n] = {run: (r["seconds"], r["peak_mib"]) for run, r in runs.items()}
    del gt, dets

    print(f"[v1] segm, {V1_CATEGORIES} classes, {dets_per_image} detections per image (10% of images 10% more)")
    print(f"[v1] peak memory of a process that only imports (included in every figure): {baseline:.0f} MiB")
    head = " | ".join(f"{f'{tool} ({kind})':>21}" for tool, kind in V1_RUNS)
    print(f"[v1] {'images':>6} {'':<12} {head} | lvis-api / lst-eval (Parquet): time, memory")
    for n in sorted(measured):
        print("[v1] " + v1_row(n, "measured", measured[n]))
    if V1_VAL_IMAGES not in measured:
        xs = np.array(sorted(measured), dtype=np.float64)
        line = {}
        for run in V1_RUNS:
            line[run] = tuple(
                float(np.polyval(np.polyfit(xs, [measured[n][run][j] for n in sorted(measured)], 1), V1_VAL_IMAGES))
                for j in (0, 1)
            )
        print("[v1] " + v1_row(V1_VAL_IMAGES, "extrapolated", line))
        print(
            f"[v1] extrapolated: a straight line through the measured sizes ({', '.join(map(str, sorted(measured)))})"
        )
    print(f"[v1] metrics of lst-eval (Parquet and json) agree with lvis-api's to 1e-6: {agree}", flush=True)
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
    parser.add_argument(
        "--v1-images",
        type=int,
        nargs="+",
        metavar="N",
        help=f"LVIS v1 val cost (segm): measure at these image counts, extrapolate to {V1_VAL_IMAGES}",
    )
    parser.add_argument("--measure", choices=("lst-eval", "lvis-api", "imports"), help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--dets", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # a child process of the v1 case
        measure(args.measure, args.gt, args.dets)
        return 0
    if args.v1_images:
        sizes = sorted(set(args.v1_images))
        if sizes[0] < 1 or sizes[-1] > V1_VAL_IMAGES or (len(sizes) < 2 and sizes[-1] < V1_VAL_IMAGES):
            parser.error(f"--v1-images: two or more counts in 1..{V1_VAL_IMAGES} (or {V1_VAL_IMAGES} itself)")

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
        if args.v1_images:
            ok &= v1_scale(sorted(set(args.v1_images)), args.dets_per_image, args.seed, tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
