"""Checks, before any training, that every image is on disk and readable and every mask decodes.

Training reads images and decodes masks lazily; a missing file or a broken polygon would otherwise
crash a run hours in. The check reports every problem at once (counts and the first few cases).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pandas as pd
from PIL import Image, UnidentifiedImageError

from lst.data.lvis_json import describe_roots, image_roots
from lst.errors import ConfigError, DataError

SHOWN = 5  # problems listed per kind; the rest are counted


@dataclass
class CheckReport:
    images: int = 0
    annotations: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    bad_masks: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        kinds = (
            ("images missing", self.missing),
            ("images unreadable", self.unreadable),
            ("images of another size than the annotations say", self.wrong_size),
            ("annotations with a segmentation that does not decode", self.bad_masks),
        )
        return [f"{len(cases)} {what}: {'; '.join(cases[:SHOWN])}" for what, cases in kinds if cases]

    def markdown(self) -> str:
        return (
            "# Input check\n\n"
            f"- images checked: {self.images} (on disk, readable, of the annotated size)\n"
            f"- annotations checked: {self.annotations} (segmentation decodes to a polygon or RLE of the image)\n"
        )


def _image_problem(path: Path, width: int, height: int, decode: bool) -> tuple[str, str] | None:
    """(kind, description) of what is wrong with one image file, or None."""
    if not path.is_file():
        return "missing", str(path)
    try:
        with Image.open(path) as image:
            size = image.size
            if decode:
                image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        return "unreadable", f"{path} ({error})"
    if size != (width, height):
        return "wrong_size", f"{path} is {size[0]}x{size[1]}, annotated {width}x{height}"
    return None


def check_images(
    images: pd.DataFrame, image_root: str | Path | Mapping[str, str], decode: bool = False, workers: int = 8
) -> CheckReport:
    """Every image's file exists under its split's folder of ``image_root``, opens, and has the annotated size.

    Only the header is read unless ``decode``; threads, because on a cluster file system the cost is I/O.
    """
    if workers < 1:
        raise ConfigError(f"check.workers: {workers} threads; give at least 1")
    roots = image_roots(image_root)
    report = CheckReport(images=len(images))
    jobs = zip(images["split"], images["file_name"], images["width"], images["height"], strict=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: _image_problem(roots[job[0]] / job[1], int(job[2]), int(job[3]), decode), jobs)
        for result in results:
            if result is not None:
                getattr(report, result[0]).append(result[1])
    return report


class _RLE(msgspec.Struct):
    size: list[int]
    counts: list[int] | str


# polygons (numbers checked while decoding, in C) or an RLE; anything else is a validation error
_SEGMENTATION = msgspec.json.Decoder(list[list[float]] | _RLE)


def _segmentation_problem(text: str, width: int, height: int) -> str | None:
    try:
        segmentation = _SEGMENTATION.decode(text)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        return f"neither polygons nor RLE ({error})"
    if isinstance(segmentation, list):
        if not segmentation:
            return "no polygons"
        for polygon in segmentation:
            if len(polygon) < 6 or len(polygon) % 2:
                return f"a polygon with {len(polygon)} coordinates (needs an even number >= 6)"
        return None
    if segmentation.size != [height, width]:
        return f"an RLE of size {segmentation.size} on a {height}x{width} image"
    if isinstance(segmentation.counts, list) and sum(segmentation.counts) != height * width:
        return f"RLE counts that sum to {sum(segmentation.counts)}, not {height * width}"
    return None


def check_segmentations(annotations: pd.DataFrame, images: pd.DataFrame, report: CheckReport) -> None:
    """Polygons have >= 3 points and an even coordinate count; RLEs match their image's size."""
    size = images.set_index(["split", "image_id"])[["width", "height"]]  # ids are unique within a split only
    sizes = size.loc[pd.MultiIndex.from_frame(annotations[["split", "image_id"]])].to_numpy()
    report.annotations += len(annotations)
    for annotation_id, text, (width, height) in zip(
        annotations["annotation_id"], annotations["segmentation"], sizes, strict=True
    ):
        problem = _segmentation_problem(text, int(width), int(height))
        if problem is not None:
            report.bad_masks.append(f"annotation {annotation_id}: {problem}")


def raise_for_problems(report: CheckReport, data_dir: str | Path, image_root: str | Path | Mapping[str, str]) -> None:
    problems = report.problems()
    if problems:
        raise DataError(
            f"input check failed for the images under {describe_roots(image_root)} and the annotations in "
            f"{data_dir}:\n  " + "\n  ".join(problems)
        )
