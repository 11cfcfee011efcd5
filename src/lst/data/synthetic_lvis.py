"""Synthetic LVIS-v1-shaped json files, as large as LVIS v1 or smaller, for scale tests of the data steps.

    python -m lst.data.synthetic_lvis --out DIR [--images 100000] [--val-images 20000] [--seed 0]

writes ``DIR/lvis_v1_train.json`` and ``DIR/lvis_v1_val.json`` in LVIS v1's layout: images named by
``coco_url`` only (``http://images.cocodataset.org/train2017/000000391895.jpg``, no ``file_name``),
``neg_category_ids`` / ``not_exhaustive_category_ids`` per image, polygon segmentations, and categories
with ``synset``, ``frequency``, ``image_count`` and ``instance_count``. At the default size the train file
has about 100k images, 1.27M annotations and 1 GB, as LVIS v1's train file; no pixels are written.

Long tail: LVIS's frequency groups by training image count (r: 1-10 images, c: 11-100, f: more than 100)
with LVIS v1's 405 / 461 / 337 classes. Rare classes get 1-10 images (skewed to 1), common ones
log-uniform 11-100, frequent ones a smooth power-law profile from 101 up to a fifth of the images,
calibrated so that an image holds about ``categories_per_image`` classes. Each (image, class) pair holds
1 + Poisson(lambda_c) instances, lambda_c varying by class and calibrated to ``annotations_per_image``.
Category ids are not in frequency order (as LVIS's alphabetical ids are not).

Realism where the ingestion must cope: a ``quirk_rate`` fraction of boxes overshoots the image by a float
rounding (to be clipped) and as many are degenerate, zero height (to be skipped). Val images come a
quarter from ``val2017`` and the rest from ``train2017`` URLs, as LVIS v1's val does.

The same spec and seed give byte-identical files. Generation is vectorised with numpy per group of
polygons of equal vertex count and encoded with msgspec chunk by chunk, so memory stays bounded.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

from lst.data.phase_plan import LVIS_FREQUENCY_THRESHOLDS, frequency_of
from lst.io import atomic_path

log = logging.getLogger(__name__)

COCO_URL = "http://images.cocodataset.org/{folder}/{id:012d}.jpg"
COCO_MAX_ID = 581_929  # the largest COCO 2017 image id
RARE_MAX, COMMON_MAX = LVIS_FREQUENCY_THRESHOLDS  # LVIS: r 1-10 training images, c 11-100, f above
CHUNK = 1 << 16  # annotations generated and encoded at a time (fixed: the output must not depend on memory)


@dataclass(frozen=True)
class SyntheticLvisSpec:
    train_images: int = 100_000
    val_images: int = 20_000
    frequent: int = 405  # LVIS v1's f / c / r class counts
    common: int = 461
    rare: int = 337
    annotations_per_image: float = 12.7  # LVIS v1 train: 1,270,141 annotations on 100,170 images
    categories_per_image: float = 3.4  # distinct classes per image, about
    mean_vertices: float = 48.0  # polygon vertices per annotation; sets the file size (about 1 GB at full size)
    multi_polygon_rate: float = 0.1  # annotations whose segmentation has two polygons
    quirk_rate: float = 1e-4  # boxes overshooting the image by a rounding, and as many of zero height
    seed: int = 0

    @property
    def num_categories(self) -> int:
        return self.frequent + self.common + self.rare


# Field order and names as in LVIS v1's files.
class _Image(msgspec.Struct):
    date_captured: str
    neg_category_ids: list[int]
    id: int
    license: int
    height: int
    width: int
    flickr_url: str
    coco_url: str
    not_exhaustive_category_ids: list[int]


class _Annotation(msgspec.Struct):
    area: float
    id: int
    segmentation: list[list[float]]
    image_id: int
    bbox: list[float]
    category_id: int


class _Category(msgspec.Struct, rename={"def_": "def"}):
    frequency: str
    synonyms: list[str]
    synset: str
    def_: str
    id: int
    name: str
    image_count: int
    instance_count: int


@dataclass
class _Split:
    """Everything of one json file except the polygons, which are drawn chunk by chunk while writing."""

    name: str  # "train" or "val"
    image_ids: np.ndarray
    folders: np.ndarray  # "train2017" / "val2017" per image
    widths: np.ndarray
    heights: np.ndarray
    ann_image: np.ndarray  # index into image_ids, per annotation (sorted by image, then class)
    ann_category: np.ndarray
    first_annotation_id: int
    pair_image: np.ndarray  # distinct (image index, category id) pairs
    pair_category: np.ndarray


def _frequent_profile(num: int, low: int, high: int, target_sum: float) -> np.ndarray:
    """``num`` image counts from ``high`` (the head) down to ``low``: low * (high/low) ** (x ** p), x from 1 to 0,
    with p found by bisection so that they sum to about ``target_sum`` (clamped to what the profile can reach)."""
    if num == 0:
        return np.zeros(0, np.int64)
    x = np.linspace(1.0, 0.0, num)

    def total(p: float) -> float:
        return float(np.sum(low * (high / low) ** (x**p)))

    lo, hi = -7.0, 7.0  # log p: total(p) falls as p grows
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(np.exp(mid)) > target_sum else (lo, mid)
    counts = np.round(low * (high / low) ** (x ** np.exp((lo + hi) / 2))).astype(np.int64)
    return np.clip(counts, low, high)


def _category_table(spec: SyntheticLvisSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per category id 1..C: train image count, instance rate lambda and group, ids shuffled over groups."""
    n = spec.train_images
    rare = 1 + np.floor(RARE_MAX * rng.random(spec.rare) ** 2).astype(np.int64)
    common = np.round(np.exp(rng.uniform(np.log(RARE_MAX + 1), np.log(COMMON_MAX + 1), spec.common)))
    common = np.clip(common.astype(np.int64), RARE_MAX + 1, COMMON_MAX)
    head = min(n, max(COMMON_MAX + 1, n // 5))
    target = spec.categories_per_image * n - rare.sum() - common.sum()
    frequent = _frequent_profile(spec.frequent, COMMON_MAX + 1, head, target)
    image_count = np.concatenate([frequent, common, rare])
    # per-class spread of instances per image; rare and common classes hold few per image, as in LVIS
    spread = rng.gamma(1.0, 1.0, spec.num_categories)
    base_rate = np.concatenate([np.zeros(spec.frequent), np.full(spec.common, 0.8), np.full(spec.rare, 0.3)])
    rate = base_rate * spread
    # frequent classes' lambda_c = lam * spread_c, with lam making the expected total hit the target
    tail_instances = np.sum(image_count[spec.frequent :] * (1 + rate[spec.frequent :]))
    base_instances = frequent.sum() + tail_instances  # one instance per frequent pair, plus the tail
    weight = np.sum(frequent * spread[: spec.frequent])
    lam = max(0.0, spec.annotations_per_image * n - base_instances) / max(weight, 1e-9)
    rate[: spec.frequent] = lam * spread[: spec.frequent]
    order = rng.permutation(spec.num_categories)  # position i of the groups' arrays gets category id order[i] + 1
    by_id = np.empty(spec.num_categories, np.int64)
    by_id[order] = np.arange(spec.num_categories)
    return {"image_count": image_count[by_id], "rate": rate[by_id]}


def _pairs(
    image_count: np.ndarray, num_images: int, frequent_ids: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (image index, category id) pairs: each class in ``image_count[c]`` random images; an image
    left without any class gets one frequent class, as every LVIS image holds at least one annotation."""
    images = [rng.choice(num_images, int(count), replace=False) for count in image_count]
    pair_image = np.concatenate(images).astype(np.int64)
    pair_category = np.repeat(np.arange(1, len(image_count) + 1, dtype=np.int64), image_count)
    empty = np.setdiff1d(np.arange(num_images), pair_image)
    if len(empty) and len(frequent_ids):
        pair_image = np.concatenate([pair_image, empty])
        pair_category = np.concatenate([pair_category, rng.choice(frequent_ids, len(empty))])
    order = np.lexsort((pair_category, pair_image))
    return pair_image[order], pair_category[order]


def _image_sizes(num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """COCO-like: long side 640, short side 360-640, three in four landscape."""
    short = rng.integers(360, 641, num)
    landscape = rng.random(num) < 0.75
    return np.where(landscape, 640, short).astype(np.int64), np.where(landscape, short, 640).astype(np.int64)


def _build_splits(spec: SyntheticLvisSpec) -> tuple[dict[str, np.ndarray], _Split, _Split]:
    if spec.train_images <= COMMON_MAX and spec.frequent:
        raise ValueError(f"frequent classes need more than {COMMON_MAX} training images, got {spec.train_images}")
    if min(spec.train_images, spec.num_categories) <= 0 or spec.val_images < 0:
        raise ValueError("need at least one training image and one category")
    rng = np.random.default_rng([spec.seed, 0])
    categories = _category_table(spec, rng)
    frequent_ids = np.flatnonzero(frequency_of(categories["image_count"]) == "f") + 1
    all_ids = rng.choice(np.arange(1, COCO_MAX_ID + 1), spec.train_images + spec.val_images, replace=False)
    all_ids = rng.permutation(np.sort(all_ids))
    splits = []
    first_annotation_id = 1
    for name, num, image_count in (
        ("train", spec.train_images, categories["image_count"]),
        ("val", spec.val_images, None),
    ):
        split_rng = np.random.default_rng([spec.seed, 1 if name == "train" else 2])
        if image_count is None:  # val: about the train share of each class, at most every val image
            share = spec.val_images / spec.train_images
            image_count = np.minimum(split_rng.binomial(categories["image_count"], min(share, 1.0)), num)
        ids = np.sort(all_ids[: spec.train_images] if name == "train" else all_ids[spec.train_images :])
        pair_image, pair_category = _pairs(image_count, num, frequent_ids, split_rng)
        instances = 1 + split_rng.poisson(categories["rate"][pair_category - 1])
        widths, heights = _image_sizes(num, split_rng)
        folders = np.full(num, "train2017")
        if name == "val":
            folders[split_rng.random(num) < 0.25] = "val2017"
        split = _Split(
            name=name,
            image_ids=ids,
            folders=folders,
            widths=widths,
            heights=heights,
            ann_image=np.repeat(pair_image, instances),
            ann_category=np.repeat(pair_category, instances),
            first_annotation_id=first_annotation_id,
            pair_image=pair_image,
            pair_category=pair_category,
        )
        first_annotation_id += len(split.ann_image)
        splits.append(split)
    train, val = splits
    categories["instance_count"] = np.bincount(train.ann_category, minlength=spec.num_categories + 1)[1:]
    categories["image_count"] = np.bincount(train.pair_category, minlength=spec.num_categories + 1)[1:]
    return categories, train, val


def _per_image_lists(image: np.ndarray, values: np.ndarray, num_images: int) -> list[list[int]]:
    """values grouped by image (``image`` sorted ascending) as one Python list per image."""
    bounds = np.searchsorted(image, np.arange(num_images + 1))
    flat = values.tolist()
    return [flat[bounds[i] : bounds[i + 1]] for i in range(num_images)]


def _images(split: _Split, num_categories: int, rng: np.random.Generator) -> list[_Image]:
    num = len(split.image_ids)
    stride = num_categories + 1
    present = split.pair_image * stride + split.pair_category
    # neg_category_ids: 0-8 random classes checked absent from the image
    candidates = np.repeat(np.arange(num), rng.integers(0, 9, num)) * stride
    candidates = np.unique(candidates + rng.integers(1, stride, len(candidates)))
    negative = candidates[~np.isin(candidates, present)]
    # not_exhaustive_category_ids: about 5% of the classes present in an image
    flagged = present[rng.random(len(present)) < 0.05]
    negatives = _per_image_lists(negative // stride, negative % stride, num)
    not_exhaustive = _per_image_lists(flagged // stride, flagged % stride, num)
    licenses = rng.integers(1, 7, num).tolist()
    days = rng.integers(0, 365, num).tolist()
    return [
        _Image(
            date_captured=f"2013-{1 + day // 31 % 12:02d}-{1 + day % 28:02d} 12:{image_id % 60:02d}:{day % 60:02d}",
            neg_category_ids=neg,
            id=image_id,
            license=lic,
            height=height,
            width=width,
            flickr_url=f"http://farm{1 + image_id % 9}.staticflickr.com/{image_id % 9000}/{image_id}_z.jpg",
            coco_url=COCO_URL.format(folder=folder, id=image_id),
            not_exhaustive_category_ids=not_ex,
        )
        for image_id, folder, width, height, neg, not_ex, lic, day in zip(
            split.image_ids.tolist(),
            split.folders.tolist(),
            split.widths.tolist(),
            split.heights.tolist(),
            negatives,
            not_exhaustive,
            licenses,
            days,
            strict=True,
        )
    ]


def _annotation_chunk(
    split: _Split, start: int, stop: int, spec: SyntheticLvisSpec, rng: np.random.Generator
) -> list[_Annotation]:
    """Annotations ``start:stop`` of the split: star-shaped polygons inside a box inside the image."""
    count = stop - start
    image = split.ann_image[start:stop]
    width = split.widths[image].astype(np.float64)
    height = split.heights[image].astype(np.float64)
    # box: area a log-uniform fraction of the image, aspect ratio around 1
    area = np.exp(rng.uniform(np.log(1e-4), np.log(0.4), count)) * width * height
    aspect = np.exp(rng.normal(0.0, 0.5, count))
    box_w = np.clip(np.sqrt(area * aspect), 2.0, 0.98 * width)
    box_h = np.clip(area / box_w, 2.0, 0.98 * height)
    x0 = rng.random(count) * (width - box_w)
    y0 = rng.random(count) * (height - box_h)
    vertices = np.clip(np.round(6 + rng.gamma(2.0, max(spec.mean_vertices - 6, 0.5) / 2, count)), 6, 400)
    vertices = vertices.astype(np.int64)
    polygons = np.where(rng.random(count) < spec.multi_polygon_rate, 2, 1)
    segmentation: list[Any] = [None] * count
    bbox = np.zeros((count, 4))
    poly_area = np.zeros(count)
    for num_polygons, num_vertices in sorted(set(zip(polygons.tolist(), vertices.tolist(), strict=True))):
        rows = np.flatnonzero((polygons == num_polygons) & (vertices == num_vertices))
        n = len(rows)
        angle = np.sort(rng.uniform(0.0, 2 * np.pi, (n, num_polygons, num_vertices)), axis=-1)
        radius = rng.uniform(0.6, 1.0, (n, num_polygons, num_vertices))
        half_w = (box_w[rows] / (2 * num_polygons))[:, None, None]
        half_h = (box_h[rows] / 2)[:, None, None]
        centre_x = x0[rows, None, None] + half_w * (2 * np.arange(num_polygons)[None, :, None] + 1)
        centre_y = y0[rows, None, None] + half_h
        xs = np.round(centre_x + half_w * radius * np.cos(angle), 2)
        ys = np.round(centre_y + half_h * radius * np.sin(angle), 2)
        # shoelace area of each polygon, summed over the annotation's polygons
        cross = xs * np.roll(ys, -1, axis=-1) - np.roll(xs, -1, axis=-1) * ys
        poly_area[rows] = np.abs(cross.sum(axis=-1) / 2).sum(axis=-1)
        left, top = xs.min(axis=(1, 2)), ys.min(axis=(1, 2))
        bbox[rows] = np.stack([left, top, xs.max(axis=(1, 2)) - left, ys.max(axis=(1, 2)) - top], axis=1)
        coords = np.stack([xs, ys], axis=-1).reshape(n, num_polygons, 2 * num_vertices)
        for row, polygon in zip(rows.tolist(), coords.tolist(), strict=True):
            segmentation[row] = polygon
    # the quirks of real files: overshoot by a float rounding, and degenerate boxes
    quirk = rng.random(count)
    overshoot = quirk < spec.quirk_rate
    bbox[overshoot, 2] = width[overshoot] - bbox[overshoot, 0] + 1e-3
    bbox[(quirk >= spec.quirk_rate) & (quirk < 2 * spec.quirk_rate), 3] = 0.0
    bbox = np.round(bbox, 4)
    ids = range(split.first_annotation_id + start, split.first_annotation_id + stop)
    return [
        _Annotation(area=a, id=i, segmentation=s, image_id=im, bbox=b, category_id=c)
        for a, i, s, im, b, c in zip(
            np.round(poly_area, 2).tolist(),
            ids,
            segmentation,
            split.image_ids[image].tolist(),
            bbox.tolist(),
            split.ann_category[start:stop].tolist(),
            strict=True,
        )
    ]


def _write_split(
    path: Path, split: _Split, categories: list[_Category], spec: SyntheticLvisSpec, encoder: msgspec.json.Encoder
) -> None:
    code = 1 if split.name == "train" else 2
    images = _images(split, spec.num_categories, np.random.default_rng([spec.seed, code, 0]))
    info = {
        "description": f"synthetic LVIS v1-shaped {split.name} set (lst.data.synthetic_lvis, seed {spec.seed})",
        "version": "1.0",
        "year": 2020,
    }
    licenses = [{"id": i, "name": f"license {i}", "url": ""} for i in range(1, 7)]
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "wb") as out:
        out.write(b'{"info":' + encoder.encode(info) + b',"annotations":[')
        _write_annotations(out, split, spec, encoder)
        out.write(b'],"images":' + encoder.encode(images))
        out.write(b',"licenses":' + encoder.encode(licenses))
        out.write(b',"categories":' + encoder.encode(categories) + b"}")


def _write_annotations(out: IO[bytes], split: _Split, spec: SyntheticLvisSpec, encoder: msgspec.json.Encoder) -> None:
    code = 1 if split.name == "train" else 2
    total = len(split.ann_image)
    for chunk, start in enumerate(range(0, total, CHUNK)):
        rng = np.random.default_rng([spec.seed, code, 1, chunk])
        encoded = encoder.encode(_annotation_chunk(split, start, min(start + CHUNK, total), spec, rng))
        if chunk:
            out.write(b",")
        out.write(memoryview(encoded)[1:-1])  # the chunk's items without its brackets


def generate(out_dir: str | Path, spec: SyntheticLvisSpec = SyntheticLvisSpec()) -> dict[str, Any]:
    """Write ``lvis_v1_train.json`` and ``lvis_v1_val.json`` into ``out_dir``; return a summary of them."""
    out_dir = Path(out_dir)
    categories, train, val = _build_splits(spec)
    frequency = frequency_of(categories["image_count"])
    category_list = [
        _Category(
            frequency=str(freq),
            synonyms=[f"class_{cid:04d}"],
            synset=f"class_{cid:04d}.n.01",
            def_=f"synthetic category {cid}",
            id=cid,
            name=f"class_{cid:04d}",
            image_count=images,
            instance_count=instances,
        )
        for cid, freq, images, instances in zip(
            range(1, spec.num_categories + 1),
            frequency.tolist(),
            categories["image_count"].tolist(),
            categories["instance_count"].tolist(),
            strict=True,
        )
    ]
    encoder = msgspec.json.Encoder()
    paths = {}
    for split in (train, val):
        paths[split.name] = out_dir / f"lvis_v1_{split.name}.json"
        _write_split(paths[split.name], split, category_list, spec, encoder)
    return {
        "spec": asdict(spec),
        "files": {name: str(path) for name, path in paths.items()},
        "bytes": {name: path.stat().st_size for name, path in paths.items()},
        "images": {"train": len(train.image_ids), "val": len(val.image_ids)},
        "annotations": {"train": len(train.ann_image), "val": len(val.ann_image)},
        "frequency": {group: int(np.sum(frequency == group)) for group in "fcr"},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = SyntheticLvisSpec()
    parser.add_argument("--out", required=True, type=Path, help="folder for lvis_v1_{train,val}.json")
    parser.add_argument("--images", type=int, default=defaults.train_images, help="training images")
    parser.add_argument("--val-images", type=int, default=defaults.val_images)
    parser.add_argument(
        "--categories",
        type=int,
        nargs=3,
        metavar=("F", "C", "R"),
        default=(defaults.frequent, defaults.common, defaults.rare),
        help="frequent, common and rare classes",
    )
    parser.add_argument("--annotations-per-image", type=float, default=defaults.annotations_per_image)
    parser.add_argument("--mean-vertices", type=float, default=defaults.mean_vertices)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    frequent, common, rare = args.categories
    spec = SyntheticLvisSpec(
        train_images=args.images,
        val_images=args.val_images,
        frequent=frequent,
        common=common,
        rare=rare,
        annotations_per_image=args.annotations_per_image,
        mean_vertices=args.mean_vertices,
        seed=args.seed,
    )
    started = time.perf_counter()
    summary = generate(args.out, spec)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
