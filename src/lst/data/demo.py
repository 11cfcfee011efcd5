"""Seeded synthetic long-tailed instance-segmentation dataset in LVIS json format.

Users without LVIS (or without a GPU) run the whole LST pipeline on this small dataset. It is written by
:func:`generate_demo` from a :class:`DemoSpec`; the same spec always gives byte-identical files.

Classes
    ``len(SHAPES) * len(COLOURS)`` = 6 x 4 = 24 visually distinct classes, named ``<colour>_<shape>``
    (e.g. ``red_circle``), category ids 1..24 in (shape, colour) order. Every object is a flat-coloured
    polygon on a lightly noisy grey background.

Long tail (training split)
    Classes are ordered by a seeded permutation (so the long-tail order is *not* the id order). The class at
    long-tail position ``r`` (0-based) gets ``n_r = round(head * (r + 1) ** -alpha)`` annotated training instances, with
    ``alpha = ln(head / tail) / ln(N)`` so that ``n_0 = head_instances`` and ``n_{N-1} = tail_instances``.
    With the defaults (head 300, tail 4, N 24) ``alpha = 1.359`` and the counts are
    300, 117, 67, 46, 34, 26, 21, 18, 15, 13, 12, 10, 9, 8, 8, 7, 6, 6, 5, 5, 5, 5, 4, 4 (751 instances).

Validation split (less skewed)
    Class ``c`` gets ``max(val_min_instances, round(val_fraction * n_c))`` validation instances, i.e. a
    quarter of its training count but at least 8 (defaults), so even the rarest class has enough val
    instances for its AP to be measurable. Defaults: 75, 29, 17, 12, then 8 for the other 20 classes (293).

Frequency groups
    LVIS assigns ``frequency`` from the number of *training images* containing the class:
    ``r`` (rare) 1-10 images, ``c`` (common) 11-100, ``f`` (frequent) > 100. On a 250-image training set
    the LVIS ``f`` threshold would leave at most the head class or two frequent, so the common/frequent
    threshold is scaled down from 100 to ``common_max_images = 50`` (the rare threshold stays at the LVIS
    value ``rare_max_images = 10``). The rule actually used is therefore

        r: 1 <= image_count <= 10,   c: 11 <= image_count <= 50,   f: image_count > 50

    which with the defaults yields 13 rare, 8 common and 3 frequent classes (seeds 0-4; tested for 0).

Images and masks
    Each image holds 1..``max_objects`` (6) objects of max extent ``min_size``..``max_size`` (14..44 px) on
    ``image_size`` (128) px square images; objects never touch (rejection sampling with a 1-pixel gap).
    Shapes: circle (a 32-gon), square, triangle, five-pointed star, cross, hexagon, each randomly rotated.
    Polygon vertices are rounded to 2 decimals and the object is painted exactly onto the pixels of the
    pycocotools rasterisation of that stored polygon, so ``lvis.LVIS.ann_to_mask`` (pycocotools) reproduces
    the object's true mask pixel for pixel. (PIL's ``ImageDraw.polygon`` uses a different pixel-centre
    convention and disagrees with pycocotools on ~5 % of the pixels, mostly along the boundary.)
    ``bbox`` is the tight bbox of the polygon vertices, ``area`` the pycocotools mask area (pixel count).

Negative / not-exhaustive labels
    ``neg_category_ids``: per image a seeded random subset of ``round(neg_fraction * #absent)`` (about half)
    of the categories absent from it. ``not_exhaustive_category_ids``: on ``round(not_exhaustive_fraction *
    #images)`` (5 %) images of each split, chosen among images with fewer than ``max_objects`` objects, an
    *extra* unannotated instance of a class already annotated in the image is drawn and that class is
    listed as not exhaustive (as in LVIS, such a class is present and keeps >= 1 annotation). Because the
    extra instance is not annotated, the annotated instance counts follow the power law exactly.

Ids
    Train images have ids ``1..num_train_images``, val images continue after them, and annotation ids are
    likewise consecutive over train then val, so both are unique across the two files (LVIS draws both
    splits from disjoint COCO ids). ``file_name`` is relative to the image root: ``train/000001.png``.

Files and determinism
    ``out_dir/{train,val}.json`` and ``out_dir/images/{train,val}/<id:06d>.png``. Everything is written into
    a temporary sibling directory that is renamed onto ``out_dir`` only when complete (an existing
    ``out_dir`` is replaced), so a killed run never leaves a half-written dataset. Randomness comes from a
    ``numpy.random.Generator`` seeded from ``spec.seed``; json is dumped with sorted keys, lists sorted by id
    and floats rounded to 2 decimals; PNGs carry no metadata or timestamps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from lst.data.phase_plan import frequency_of
from lst.errors import ConfigError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
}
BACKGROUND_GREY = 128
CIRCLE_VERTICES = 32


@dataclass(frozen=True)
class DemoSpec:
    """Parameters of the synthetic dataset (see the module docstring for the rules they feed).

    Attributes:
        seed: seed of the ``numpy.random.Generator`` driving every random choice.
        image_size: side of the square images in pixels.
        num_train_images: number of training images.
        num_val_images: number of validation images.
        head_instances: annotated training instances of the most frequent class.
        tail_instances: annotated training instances of the rarest class.
        val_fraction: validation instances per training instance of a class (before the floor below).
        val_min_instances: floor of the validation instance count of every class.
        max_objects: maximum number of drawn objects per image (including an unannotated one); minimum is 1.
        min_size: minimum object extent (max of bbox width and height) in pixels.
        max_size: maximum object extent in pixels.
        rare_max_images: a class in at most this many training images is rare (``"r"``); LVIS: 10.
        common_max_images: a non-rare class in at most this many training images is common (``"c"``),
            above it frequent (``"f"``); LVIS: 100, scaled to 50 for the 250-image demo.
        neg_fraction: fraction of an image's absent categories listed in ``neg_category_ids``.
        not_exhaustive_fraction: fraction of images with an unannotated extra instance of a present class.
        background_noise: background pixels are ``BACKGROUND_GREY`` plus uniform integer noise in
            ``[-background_noise, background_noise]``; objects are flat-coloured.
    """

    seed: int = 0
    image_size: int = 128
    num_train_images: int = 250
    num_val_images: int = 100
    head_instances: int = 300
    tail_instances: int = 4
    val_fraction: float = 0.25
    val_min_instances: int = 8
    max_objects: int = 6
    min_size: int = 14
    max_size: int = 44
    rare_max_images: int = 10
    common_max_images: int = 50
    neg_fraction: float = 0.5
    not_exhaustive_fraction: float = 0.05
    background_noise: int = 6

    def __post_init__(self) -> None:
        if not 1 <= self.tail_instances <= self.head_instances:
            raise ConfigError("demo: need 1 <= tail_instances <= head_instances")
        if not 3 <= self.min_size <= self.max_size <= self.image_size // 2:
            raise ConfigError("demo: need 3 <= min_size <= max_size <= image_size // 2")
        if self.max_objects < 1 or self.num_train_images < 1 or self.num_val_images < 1:
            raise ConfigError("demo: max_objects, num_train_images and num_val_images must be >= 1")
        if not 1 <= self.rare_max_images < self.common_max_images:
            raise ConfigError("demo: need 1 <= rare_max_images < common_max_images")
        if not (0 <= self.neg_fraction <= 1 and 0 <= self.not_exhaustive_fraction <= 1):
            raise ConfigError("demo: neg_fraction and not_exhaustive_fraction must lie in [0, 1]")
        if self.val_fraction < 0 or self.val_min_instances < 1 or self.background_noise < 0:
            raise ConfigError("demo: need val_fraction >= 0, val_min_instances >= 1, background_noise >= 0")
        for split, n_img, n_inst in (
            ("train", self.num_train_images, sum(self.train_counts())),
            ("val", self.num_val_images, sum(self.val_counts())),
        ):
            # every image gets >= 1 object; keep one free slot per not-exhaustive image
            n_ne = round(self.not_exhaustive_fraction * n_img)
            if not n_img <= n_inst <= n_img * self.max_objects - n_ne:
                raise ConfigError(
                    f"demo: {split}: {n_inst} instances do not fit into {n_img} images of 1..{self.max_objects} "
                    f"objects (with {n_ne} free slots for not-exhaustive instances)"
                )

    @property
    def num_classes(self) -> int:
        return len(SHAPES) * len(COLOURS)

    @property
    def alpha(self) -> float:
        """Power-law exponent making the last position's count equal ``tail_instances``."""
        return math.log(self.head_instances / self.tail_instances) / math.log(self.num_classes)

    def train_counts(self) -> list[int]:
        """Annotated training instances by long-tail position (0 = head)."""
        return [round(self.head_instances * (r + 1) ** -self.alpha) for r in range(self.num_classes)]

    def val_counts(self) -> list[int]:
        """Annotated validation instances by long-tail position."""
        return [max(self.val_min_instances, round(self.val_fraction * n)) for n in self.train_counts()]

    def frequency(self, image_count: int) -> str:
        """LVIS frequency group from a class's training image count, with this spec's thresholds."""
        return str(frequency_of(np.asarray(image_count), (self.rare_max_images, self.common_max_images)))


def class_names() -> list[str]:
    """Category names in id order (id = index + 1): ``<colour>_<shape>``, shape-major."""
    return [f"{colour}_{shape}" for shape in SHAPES for colour in COLOURS]


def long_tail_positions(seed: int) -> list[int]:
    """``positions[k]`` is the long-tail position (0 = head) of category id ``k + 1`` for the given seed."""
    n = len(SHAPES) * len(COLOURS)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    order = rng.permutation(n)  # order[r] = category index at position r
    positions = [0] * n
    for r, k in enumerate(order.tolist()):
        positions[k] = r
    return positions


# ----------------------------------------------------------------------------------------------- shapes


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (V, 2) of a shape centred at the origin, roughly unit radius."""

    def regular(n: int, phase: float = 0.0) -> np.ndarray:
        t = phase + 2 * np.pi * np.arange(n) / n
        return np.stack([np.cos(t), np.sin(t)], axis=1)

    if shape == "circle":
        return regular(CIRCLE_VERTICES)
    if shape == "square":
        return regular(4, np.pi / 4)
    if shape == "triangle":
        return regular(3, -np.pi / 2)
    if shape == "hexagon":
        return regular(6)
    if shape == "star":
        t = -np.pi / 2 + np.pi * np.arange(10) / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    if shape == "cross":
        a, b = 1.0, 0.34
        quarter = [[b, -a], [b, -b], [a, -b]]  # one arm tip and inner corner, rotated four times
        rot90 = np.array([[0.0, 1.0], [-1.0, 0.0]])
        return np.concatenate([np.array(quarter) @ np.linalg.matrix_power(rot90, k) for k in range(4)])
    raise ValueError(f"unknown shape {shape!r}")


def _local_polygon(shape: str, size: float, angle: float, jitter: np.ndarray) -> np.ndarray:
    """Rotated shape scaled so its bbox extent is ``size``, with bbox min at ``jitter`` (in [0, 1)^2)."""
    pts = _unit_polygon(shape)
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    pts = pts - pts.min(axis=0)
    pts = pts * (size / pts.max())
    return pts + jitter


def _rasterise(poly: Sequence[float], height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of one flat polygon, exactly as pycocotools (and lvis ``ann_to_mask``) does it."""
    rle = mask_utils.frPyObjects([list(poly)], height, width)
    return mask_utils.decode(rle)[:, :, 0].astype(bool)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """8-neighbourhood binary dilation by one pixel (grows the canvas by one on each side)."""
    h, w = mask.shape
    out = np.zeros((h + 2, w + 2), dtype=bool)
    for dy in range(3):
        for dx in range(3):
            out[dy : dy + h, dx : dx + w] |= mask
    return out


# ----------------------------------------------------------------------------------------------- layout


def _objects_per_image(rng: np.random.Generator, n_images: int, n_instances: int, cap: int) -> np.ndarray:
    """Per-image object counts in ``1..cap`` summing to ``n_instances`` (one each, the rest at random)."""
    counts = np.ones(n_images, dtype=np.int64)
    for _ in range(n_instances - n_images):
        free = np.flatnonzero(counts < cap)
        counts[free[rng.integers(len(free))]] += 1
    return counts


def _place_objects(
    rng: np.random.Generator, spec: DemoSpec, classes: Sequence[int]
) -> list[tuple[int, list[float], np.ndarray]]:
    """Lay out non-touching objects of the given category indices; returns (class, polygon, mask) each."""
    size_px = spec.image_size
    sizes = rng.uniform(spec.min_size, spec.max_size, size=len(classes))
    angles = rng.uniform(0, 2 * np.pi, size=len(classes))
    jitters = rng.uniform(0, 1, size=(len(classes), 2))
    order = np.argsort(-sizes, kind="stable").tolist()  # big objects first
    scale = 1.0
    while True:
        occupied = np.zeros((size_px, size_px), dtype=bool)  # placed objects, dilated by one pixel
        placed: list[tuple[int, list[float], np.ndarray] | None] = [None] * len(classes)
        for i in order:
            shape = SHAPES[classes[i] // len(COLOURS)]
            size = max(float(spec.min_size), sizes[i] * scale)
            poly = _local_polygon(shape, size, float(angles[i]), jitters[i])
            extent = int(math.ceil(poly.max())) + 1
            local = _rasterise(np.round(poly, 2).ravel().tolist(), extent, extent)
            for _ in range(60):
                ox, oy = (int(v) for v in rng.integers(0, size_px - extent + 1, size=2))
                if (occupied[oy : oy + extent, ox : ox + extent] & local).any():
                    continue
                flat = [round(float(v), 2) for v in (poly + np.array([ox, oy])).ravel()]
                mask = _rasterise(flat, size_px, size_px)
                if (mask & occupied).any():  # rounding after the shift moved a boundary pixel
                    continue
                occupied |= _dilate(mask)[1:-1, 1:-1]
                placed[i] = (classes[i], flat, mask)
                break
            else:
                break  # this object found no room: shrink everything and lay out again
        if all(p is not None for p in placed):
            return placed  # type: ignore[return-value]
        if scale * spec.max_size <= spec.min_size:
            raise ConfigError("demo: could not lay out objects even at min_size; lower max_objects or sizes")
        scale *= 0.85


def _bbox(flat: Sequence[float]) -> list[float]:
    xs, ys = flat[0::2], flat[1::2]
    x0, y0 = min(xs), min(ys)
    return [round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)]


def _render(rng: np.random.Generator, spec: DemoSpec, objects: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    n = spec.background_noise
    noise = rng.integers(-n, n + 1, size=(spec.image_size, spec.image_size, 1))
    img = np.repeat(BACKGROUND_GREY + noise, 3, axis=2).astype(np.uint8)
    colours = list(COLOURS.values())
    for cls, mask in objects:
        img[mask] = colours[cls % len(COLOURS)]
    return img


def _make_split(
    rng: np.random.Generator,
    spec: DemoSpec,
    split: str,
    counts_by_class: Sequence[int],
    n_images: int,
    first_image_id: int,
    first_ann_id: int,
    image_dir: Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n_cls = spec.num_classes
    n_ne = round(spec.not_exhaustive_fraction * n_images)
    per_image = _objects_per_image(rng, n_images, sum(counts_by_class), spec.max_objects)
    pool = np.repeat(np.arange(n_cls), counts_by_class)
    rng.shuffle(pool)
    bounds = np.concatenate([[0], np.cumsum(per_image)])
    ne_images = set(rng.choice(np.flatnonzero(per_image < spec.max_objects), size=n_ne, replace=False).tolist())

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_id = first_ann_id
    for i in range(n_images):
        image_id = first_image_id + i
        classes = pool[bounds[i] : bounds[i + 1]].tolist()
        present = sorted(set(classes))
        extra: list[int] = []
        if i in ne_images:
            extra = [present[int(rng.integers(len(present)))]]
        placed = _place_objects(rng, spec, classes + extra)
        annotated, unannotated = placed[: len(classes)], placed[len(classes) :]
        for cls, flat, mask in annotated:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "segmentation": [flat],
                    "bbox": _bbox(flat),
                    "area": int(mask.sum()),
                }
            )
            ann_id += 1
        pixels = _render(rng, spec, [(cls, mask) for cls, _, mask in annotated + unannotated])
        file_name = f"{split}/{image_id:06d}.png"
        Image.fromarray(pixels, mode="RGB").save(image_dir / file_name, format="PNG", compress_level=6)
        absent = np.array(sorted(set(range(n_cls)) - set(present)))
        neg = rng.choice(absent, size=round(spec.neg_fraction * len(absent)), replace=False) if len(absent) else []
        images.append(
            {
                "id": image_id,
                "width": spec.image_size,
                "height": spec.image_size,
                "file_name": file_name,
                "neg_category_ids": sorted(int(c) + 1 for c in neg),
                "not_exhaustive_category_ids": [extra[0] + 1] if extra else [],
            }
        )
    return images, annotations


def _categories(spec: DemoSpec, train_annotations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    inst = Counter(a["category_id"] for a in train_annotations)
    imgs = Counter(cid for cid, _ in {(a["category_id"], a["image_id"]) for a in train_annotations})
    cats = []
    for k, name in enumerate(class_names()):
        colour, shape = name.split("_")
        cats.append(
            {
                "id": k + 1,
                "name": name,
                "synset": f"{name}.n.01",
                "synonyms": [name, f"{colour} {shape}"],
                "def": f"a flat {colour} {shape} on a grey background",
                "frequency": spec.frequency(imgs[k + 1]),
                "image_count": imgs[k + 1],
                "instance_count": inst[k + 1],
            }
        )
    return cats


def _dump(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")


def generate_demo(out_dir: str | os.PathLike, spec: DemoSpec = DemoSpec()) -> dict[str, Path]:
    """Write the synthetic LVIS-format dataset described by ``spec`` to ``out_dir`` (atomically).

    Returns ``{"train_json": out_dir/"train.json", "val_json": out_dir/"val.json",
    "image_root": out_dir/"images"}``; ``file_name`` entries are relative to ``image_root``.
    An existing ``out_dir`` is replaced.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for split in ("train", "val"):
            (tmp / "images" / split).mkdir(parents=True)
        positions = long_tail_positions(spec.seed)
        train_counts = [spec.train_counts()[r] for r in positions]
        val_counts = [spec.val_counts()[r] for r in positions]
        train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([spec.seed, 1]).spawn(2))
        train_images, train_anns = _make_split(
            train_rng, spec, "train", train_counts, spec.num_train_images, 1, 1, tmp / "images"
        )
        val_images, val_anns = _make_split(
            val_rng,
            spec,
            "val",
            val_counts,
            spec.num_val_images,
            spec.num_train_images + 1,
            len(train_anns) + 1,
            tmp / "images",
        )
        categories = _categories(spec, train_anns)
        info = {
            "description": "lst synthetic long-tailed demo dataset (LVIS format)",
            "version": "1.0",
            "seed": spec.seed,
        }
        for split, images, anns in (("train", train_images, train_anns), ("val", val_images, val_anns)):
            _dump(
                tmp / f"{split}.json",
                {
                    "info": info,
                    "licenses": [],
                    "images": images,
                    "annotations": anns,
                    "categories": categories,
                },
            )
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "d")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "train_json": out_dir / "train.json",
        "val_json": out_dir / "val.json",
        "image_root": out_dir / "images",
    }
