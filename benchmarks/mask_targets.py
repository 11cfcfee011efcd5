"""Mask targets on a dense LVIS-like image: full-image masks against lst.data.masks, in one run.

    python benchmarks/mask_targets.py [--objects 500] [--repeats 4] [--threads 1] [--model]

A 640 x 480 image holding ``--objects`` star polygons (most small, some large, as on LVIS's densest
images) is read through lst.data.dataset.DetectionData and resized by the R50-FPN config's transform
(src/lst/conf/model/resnet50_fpn.yaml: 800 x 1333, here 800 x 1067). Two paths:

    before  the loader rasterises every annotation to an H x W uint8 mask (what lst did); torchvision's
            transform resizes them with the image and ``project_masks_on_boxes`` crops them (RoIAlign)
    after   the loader keeps the polygons (lst.data.masks.InstanceMasks); only the positive RoIs get
            a 28 x 28 target (``crop_and_resize``)

By default the model-side work is the transform plus the targets of 128 positive RoIs (the config's
512 sampled RoIs x 0.25; boxes jittered around random annotations, the same in both paths). With
``--model`` it is a whole R50-FPN training step (forward and backward, lst's RoI heads, keyed samplers:
the same RoIs in both paths). Each path runs in its own subprocess, so that its peak RSS (ru_maxrss)
is its own; the printed data time is the loader's per image (image and target, flipped every other
time), the model time the mean over ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image
from torchvision.models.detection.roi_heads import project_masks_on_boxes
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from lst.data.dataset import DetectionData, hflip
from lst.data.masks import INSTANCE_MASKS, segmentation_to_mask

CONF = Path(__file__).resolve().parents[1] / "src" / "lst" / "conf" / "model" / "resnet50_fpn.yaml"
WIDTH, HEIGHT, MASK_SIZE = 640, 480, 28


def _star(rng: np.random.Generator, radius: float) -> list[float]:
    points = int(rng.integers(6, 20))
    angles = rng.uniform(0, np.pi) + np.arange(2 * points) * np.pi / points
    radii = radius * np.where(np.arange(2 * points) % 2, rng.uniform(0.4, 0.9), 1.0)
    cx, cy = rng.uniform(radius, WIDTH - radius), rng.uniform(radius, HEIGHT - radius)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).ravel().round(2).tolist()


def dense_data(root: Path, objects: int, with_masks: bool) -> DetectionData:
    """One 640 x 480 image with ``objects`` star polygons, radii log-uniform in 3..150 px."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(90, 130, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    annotations = []
    for index in range(objects):
        polygon = _star(rng, float(np.exp(rng.uniform(np.log(3), np.log(150)))))
        mask = segmentation_to_mask([polygon], HEIGHT, WIDTH).astype(bool)
        pixels[mask] = rng.integers(0, 256, 3)
        xs, ys = polygon[0::2], polygon[1::2]
        annotations.append(
            {"annotation_id": index + 1, "image_id": 1, "category_id": 1 + index % 50, "x": min(xs), "y": min(ys),
             "w": max(xs) - min(xs), "h": max(ys) - min(ys), "segmentation": json.dumps([polygon])}
        )  # fmt: skip
    Image.fromarray(pixels).save(root / "dense.png")
    images = pd.DataFrame([{"image_id": 1, "width": WIDTH, "height": HEIGHT, "file_name": "dense.png"}])
    categories = pd.DataFrame({"category_id": np.arange(1, 51)})
    return DetectionData(images, pd.DataFrame(annotations), categories, root, with_masks=with_masks)


def load(data: DetectionData, path: str, flip: bool) -> tuple[torch.Tensor, dict]:
    """The loader of either path; ``before`` is lst's loader as it was (full-image masks, then flip)."""
    if path == "after":
        return data.load(1, flip)
    image, target = data.load(1)  # data without masks
    masks = [segmentation_to_mask(s, HEIGHT, WIDTH) for s in data.annotations_of(1)["segmentation"]]
    target["masks"] = torch.from_numpy(np.stack(masks))
    return hflip(image, target) if flip else (image, target)


def positive_rois(target: dict, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` RoIs jittered around random annotations (resized frame), and their annotations."""
    generator = torch.Generator().manual_seed(0)
    matched = torch.randint(len(target["boxes"]), (count,), generator=generator)
    boxes = target["boxes"][matched]
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + 0.1 * size * (2 * torch.rand(boxes.shape, generator=generator) - 1), matched


def targets_step(cfg: dict, path: str):
    transform = GeneralizedRCNNTransform(cfg["min_size"], cfg["max_size"], cfg["image_mean"], cfg["image_std"])
    positives = int(cfg["box_batch_size_per_image"] * cfg["box_positive_fraction"])

    def step(image: torch.Tensor, target: dict) -> dict[str, float]:
        images, (resized,) = transform([image], [target])
        boxes, matched = positive_rois(resized, positives)
        if path == "before":
            out = project_masks_on_boxes(resized["masks"], boxes, matched, MASK_SIZE)
        else:
            out = resized[INSTANCE_MASKS].crop_and_resize(boxes, matched, images.image_sizes[0], MASK_SIZE)
        return {"target_pixels": float(out.sum())}

    return step


def model_step(cfg: dict, path: str):
    from lst.engine.trainer import keyed_sampling
    from lst.modeling.mask_rcnn import build_model

    torch.manual_seed(0)
    model = build_model(cfg, num_classes=51).train()
    sampling = keyed_sampling(model)
    set_keys = sampling.__enter__()

    def step(image: torch.Tensor, target: dict) -> dict[str, float]:
        set_keys([7])
        losses = model([image], [target])
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)
        return {"loss_mask": float(losses["loss_mask"])}

    return step


def measure(path: str, objects: int, repeats: int, threads: int, whole_model: bool) -> dict:
    """One path in this process: loader and model-side seconds, and the peak RSS."""
    torch.set_num_threads(threads)
    cfg = yaml.safe_load(CONF.read_text())
    with tempfile.TemporaryDirectory() as root:
        data = dense_data(Path(root), objects, with_masks=path == "after")
        step = (model_step if whole_model else targets_step)(cfg, path)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        data_times, model_times, result = [], [], {}
        for repeat in range(repeats + 1):  # the first is a warm-up
            started = time.perf_counter()
            image, target = load(data, path, flip=repeat % 2 == 1)
            loaded = time.perf_counter()
            result = step(image, target)
            if repeat:
                data_times.append(loaded - started)
                model_times.append(time.perf_counter() - loaded)
            del image, target
    return {
        "data_s": float(np.mean(data_times)),
        "model_s": float(np.mean(model_times)),
        "rss_set_up_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", action="store_true", help="a whole R50-FPN training step per image")
    parser.add_argument("--path", choices=("before", "after"), help=argparse.SUPPRESS)  # a worker's path
    args = parser.parse_args()
    if args.path:
        print(json.dumps(measure(args.path, args.objects, args.repeats, args.threads, args.model)))
        return
    results = {}
    for path in ("before", "after"):
        command = [sys.executable, __file__, "--path", path, *sys.argv[1:]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[path] = json.loads(output.strip().splitlines()[-1])
    for result in results.values():
        result["rss_growth_mb"] = result["peak_rss_mb"] - result["rss_set_up_mb"]
    work = "a whole R50-FPN training step" if args.model else "transform + 28x28 targets of 128 positive RoIs"
    cfg = yaml.safe_load(CONF.read_text())
    scale = min(cfg["min_size"] / min(WIDTH, HEIGHT), cfg["max_size"] / max(WIDTH, HEIGHT))
    print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"image {WIDTH}x{HEIGHT}, {args.objects} polygons, trained at {int(WIDTH * scale)}x{int(HEIGHT * scale)}")
    print(f"model side: {work}; {args.repeats} repeats after a warm-up; {args.threads} thread(s)")
    print(f"{'':28}{'before':>10}{'after':>10}{'before/after':>14}")
    rows = (
        ("data time / image (s)", "data_s", ".3f", True),
        ("model side / image (s)", "model_s", ".3f", True),
        ("peak RSS (MB)", "peak_rss_mb", ".0f", True),
        ("RSS after set-up (MB)", "rss_set_up_mb", ".0f", False),
        ("peak - set-up (MB)", "rss_growth_mb", ".0f", True),
        ("sum of the mask targets", "target_pixels", ".1f", False),
        ("loss_mask (same RoIs)", "loss_mask", ".4f", False),
    )
    for label, key, digits, ratio in rows:
        if key in results["before"]:
            before, after = results["before"][key], results["after"][key]
            print(f"{label:28}{before:10{digits}}{after:10{digits}}" + (f"{before / after:13.1f}x" if ratio else ""))


if __name__ == "__main__":
    main()
