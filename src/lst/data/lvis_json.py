"""Parse LVIS-format json (v0.5, v1, or the embedded demo) or COCO instances json into columnar tables, once.

The decoder is typed (msgspec): each segmentation is kept as raw json text and never becomes a Python
string; the texts are copied once into an Arrow string column. Ids, boxes and areas go straight into
numpy arrays and every check is vectorised, so a 1 GB LVIS v1 file ingests in seconds.

A COCO instances json is a file where no image lists ``neg_category_ids``: COCO is annotated exhaustively,
so every category not annotated on an image is written as a negative of that image (the LVIS evaluation
then counts its detections there as false positives). Crowd regions (``iscrowd: 1``) are kept, flagged,
for the evaluation to ignore as COCO does; nothing trains on them. Train and val files may reuse image and
annotation ids (each exported on its own): images are keyed by (split, image_id) downstream.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain, compress
from operator import attrgetter
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lst.data import tables
from lst.errors import DataError

log = logging.getLogger(__name__)

# Boxes smaller than this (pixels, either side) are skipped, as detectron2 does.
MIN_BOX_SIDE = 1e-2
# LVIS v0.5 names images the COCO 2014 way; the pictures are COCO 2017's, same 12-digit id.
_COCO_2014_NAME = re.compile(r"COCO_[a-z]+2014_\d{12}\.jpg")
# An Arrow string array addresses at most 2 GiB of text; longer columns are split into chunks.
_MAX_CHUNK_BYTES = 1 << 30
SPLITS = ("train", "val")


# gc=False: millions of these are made at once; they hold no cycles, so the cyclic GC need not track them.
class _Image(msgspec.Struct, gc=False):
    id: int
    width: int
    height: int
    file_name: str | None = None
    coco_url: str | None = None
    neg_category_ids: list[int] | None = None  # None in every image: a COCO-format (exhaustive) file
    not_exhaustive_category_ids: list[int] = []


class _Annotation(msgspec.Struct, gc=False):
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    segmentation: msgspec.Raw
    area: float | None = None
    iscrowd: int = 0  # COCO: 1 for a crowd region (RLE over several objects)


class _Category(msgspec.Struct, gc=False):
    id: int
    name: str
    frequency: str | None = None


class _LvisFile(msgspec.Struct):
    images: list[_Image]
    annotations: list[_Annotation]
    categories: list[_Category]


@dataclass
class LvisTables:
    """Arrow tables with the schemas of ``tables.IMAGES``, ``tables.ANNOTATIONS`` and ``tables.CATEGORIES``."""

    images: pa.Table
    annotations: pa.Table
    categories: pa.Table


def image_file_name(image: _Image, split: str) -> str:
    """Path relative to the image root, where COCO 2017's ``train2017/`` and ``val2017/`` folders are.

    v1 names an image by ``coco_url`` only: ``.../train2017/000000391895.jpg`` -> ``train2017/000000391895.jpg``
    (v1's val holds images of both folders). v0.5's ``file_name`` is COCO 2014's
    (``COCO_val2014_000000397133.jpg``) but its train images are all in COCO 2017 train and its val images
    in val2017, so it becomes ``<split>2017/000000397133.jpg``, as detectron2 resolves it. Any other
    ``file_name`` (the demo's, COCO's bare ``000000397133.jpg``) is taken as it is, relative to the split's
    own folder when ``dataset.image_root`` gives one per split (``image_roots``).
    """
    if image.file_name:
        if _COCO_2014_NAME.fullmatch(image.file_name):
            return f"{split}2017/{image.file_name[-16:]}"
        return image.file_name
    if image.coco_url:
        return "/".join(image.coco_url.rstrip("/").split("/")[-2:])
    raise DataError(f"image {image.id} has neither file_name nor coco_url")


def image_roots(image_root: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    """The image folder of each split: ``dataset.image_root`` is one folder for both, or ``{train: DIR, val: DIR}``."""
    if isinstance(image_root, Mapping):
        if set(image_root) != set(SPLITS) or not all(image_root[split] for split in SPLITS):
            raise DataError(
                "dataset.image_root: give one folder, or one folder for each of train and val "
                f"({{train: DIR, val: DIR}}), not {dict(image_root)}"
            )
        return {split: Path(image_root[split]) for split in SPLITS}
    return {split: Path(image_root) for split in SPLITS}


def describe_roots(image_root: str | Path | Mapping[str, str | Path]) -> str:
    """``image_root`` for a message: the folder, or ``train: DIR, val: DIR``."""
    roots = image_roots(image_root)
    if roots["train"] == roots["val"]:
        return str(roots["train"])
    return ", ".join(f"{split}: {root}" for split, root in roots.items())


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Creating millions of objects would trigger many full collections that find nothing to free."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_unique(ids: np.ndarray, what: str, path: Path) -> None:
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):  # LVIS files list ids ascending: no sort needed
        return
    unique, counts = np.unique(ids, return_counts=True)
    duplicated = unique[counts > 1]
    if len(duplicated):
        raise DataError(f"{path}: duplicate {what} ids {duplicated[:5].tolist()} ({len(duplicated)} in all)")


def _column(items: list, field: str, dtype: type) -> np.ndarray:
    return np.fromiter(map(attrgetter(field), items), dtype, len(items))


def _id_lists(lists: list[list[int]]) -> pa.ListArray:
    lengths = np.fromiter(map(len, lists), np.int32, len(lists))
    offsets = np.zeros(len(lists) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(chain.from_iterable(lists), np.int64, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


class _CategoriesOnly(msgspec.Struct):
    categories: list[_Category]


def _decode(path: Path, struct: type[msgspec.Struct]) -> msgspec.Struct:
    """``path`` decoded as ``struct``, its categories not empty; DataError naming the file and the problem."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from error
    try:
        data = msgspec.json.decode(raw, type=struct)
    except msgspec.ValidationError as error:
        raise DataError(f"{path}: not an LVIS-format file: {error}") from error
    except msgspec.DecodeError as error:
        raise DataError(f"{path}: not valid json: {error}") from error
    if not data.categories:
        raise DataError(f"{path}: has no categories")
    return data


def count_categories(path: str | Path) -> int:
    """The number of categories of an LVIS json, checked as read_lvis_json checks its categories (the rest of
    the file is only parsed): for the workflow, which counts phases while it builds the DAG."""
    path = Path(path)
    return len(_category_table(_decode(path, _CategoriesOnly).categories, path))


def read_lvis_json(path: str | Path, split: str) -> LvisTables:
    """Decode and validate one LVIS json; raise DataError naming ``path`` and the problem."""
    path = Path(path)
    with _gc_paused():
        data = _decode(path, _LvisFile)  # the segmentations reference the file's bytes until copied out
        categories = _category_table(data.categories, path)
        exhaustive = all(image.neg_category_ids is None for image in data.images)
        images = _image_table(data.images, split, categories.column("category_id").to_numpy(), path)
        annotations = _annotation_table(data.annotations, split, images, categories, path)
        del data
    if exhaustive:
        log.info(
            "%s: no image lists neg_category_ids: a COCO-format file, annotated exhaustively; every category not "
            "annotated on an image is a negative of it",
            path,
        )
        negatives = _absent_categories(images, annotations, categories)
        images = images.set_column(images.schema.get_field_index("neg_category_ids"), "neg_category_ids", negatives)
    crowd = int(pc.sum(annotations.column("iscrowd")).as_py() or 0)
    if crowd:
        log.info(
            "%s: %d crowd regions (iscrowd 1): not trained on, ignored by the evaluation as COCO does", path, crowd
        )
    return LvisTables(images=images, annotations=annotations, categories=categories)


def _absent_categories(images: pa.Table, annotations: pa.Table, categories: pa.Table) -> pa.ListArray:
    """Per image, the ids of the categories none of its annotations has, ascending: its negatives when the
    file is annotated exhaustively."""
    image_ids, category_ids = images.column("image_id").to_numpy(), categories.column("category_id").to_numpy()
    image_order, category_order = np.argsort(image_ids), np.argsort(category_ids)
    row = image_order[np.searchsorted(image_ids[image_order], annotations.column("image_id").to_numpy())]
    column = np.searchsorted(category_ids[category_order], annotations.column("category_id").to_numpy())
    absent = np.ones((len(image_ids), len(category_ids)), dtype=bool)  # columns in ascending id order
    absent[row, column] = False
    offsets = np.zeros(len(image_ids) + 1, np.int32)
    np.cumsum(absent.sum(axis=1), out=offsets[1:])
    values = np.broadcast_to(category_ids[category_order], absent.shape)[absent]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int64)))


def _category_table(categories: list[_Category], path: Path) -> pa.Table:
    ids = _column(categories, "id", np.int64)
    _check_unique(ids, "category", path)
    return pa.table(
        {
            "category_id": ids,
            "name": [c.name for c in categories],
            "frequency": [c.frequency or "" for c in categories],
        },
        schema=tables.CATEGORIES,
    )


def _image_table(images: list[_Image], split: str, category_ids: np.ndarray, path: Path) -> pa.Table:
    ids = _column(images, "id", np.int64)
    _check_unique(ids, "image", path)
    width, height = _column(images, "width", np.int64), _column(images, "height", np.int64)
    bad_size = (width <= 0) | (height <= 0)
    if bad_size.any():
        raise DataError(f"{path}: images {ids[bad_size][:5].tolist()} have a non-positive size")
    if max(width.max(initial=0), height.max(initial=0)) > np.iinfo(np.int32).max:
        raise DataError(f"{path}: an image is larger than {np.iinfo(np.int32).max} pixels")
    try:
        file_names = [image_file_name(im, split) for im in images]
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    id_lists = {}
    for column in ("neg_category_ids", "not_exhaustive_category_ids"):
        id_lists[column] = _id_lists([ids or [] for ids in map(attrgetter(column), images)])
        listed = id_lists[column].values.to_numpy()
        unknown = np.unique(listed[~np.isin(listed, category_ids)])
        if len(unknown):
            raise DataError(f"{path}: images list unknown category ids in {column}: {unknown[:5].tolist()}")
    return pa.table(
        {
            "image_id": ids,
            "split": pa.repeat(split, len(images)),
            "width": width.astype(np.int32),
            "height": height.astype(np.int32),
            "file_name": file_names,
            **id_lists,
        },
        schema=tables.IMAGES,
    )


def _annotation_table(
    annotations: list[_Annotation], split: str, images: pa.Table, categories: pa.Table, path: Path
) -> pa.Table:
    count = len(annotations)
    ids = _column(annotations, "id", np.int64)
    _check_unique(ids, "annotation", path)
    image_ids = _column(annotations, "image_id", np.int64)
    category_ids = _column(annotations, "category_id", np.int64)
    boxes = np.fromiter(chain.from_iterable(map(attrgetter("bbox"), annotations)), np.float64, 4 * count)
    boxes = boxes.reshape(count, 4)
    area = np.array(list(map(attrgetter("area"), annotations)), dtype=np.float64)  # None -> nan
    iscrowd = _column(annotations, "iscrowd", np.int64)
    segmentations = list(map(attrgetter("segmentation"), annotations))
    lengths = np.fromiter(map(len, segmentations), np.int64, count)

    size = _image_sizes(image_ids, images, ids, path)
    unknown_categories = ~np.isin(category_ids, categories.column("category_id").to_numpy())
    if unknown_categories.any():
        raise DataError(
            f"{path}: annotations {ids[unknown_categories][:5].tolist()} refer to unknown category ids "
            f"({int(unknown_categories.sum())} in all)"
        )
    not_a_flag = (iscrowd != 0) & (iscrowd != 1)
    if not_a_flag.any():
        raise DataError(f"{path}: annotations {ids[not_a_flag][:5].tolist()} have an iscrowd other than 0 or 1")
    # boxes are finite: msgspec refuses NaN, Infinity and out-of-range numbers while decoding
    negative = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if negative.any():
        raise DataError(f"{path}: annotations {ids[negative][:5].tolist()} have a negative box width or height")
    # only short texts can be empty ("[]", "[[]]", "null", "{}", maybe with spaces): decode just those
    short = np.flatnonzero(lengths <= 16)
    empty = [i for i in short.tolist() if _is_empty(segmentations[i])]
    if empty:
        raise DataError(f"{path}: annotations {ids[empty][:5].tolist()} have an empty segmentation")

    off_image = (boxes[:, 0] >= size[:, 0]) | (boxes[:, 1] >= size[:, 1])
    off_image |= (boxes[:, 0] + boxes[:, 2] <= 0) | (boxes[:, 1] + boxes[:, 3] <= 0)
    if off_image.any():  # no rounding puts a box wholly off its image: the ids or sizes are wrong
        bad = ids[off_image][:5].tolist()
        raise DataError(f"{path}: boxes of annotations {bad} lie outside their image ({int(off_image.sum())} in all)")
    boxes, keep = _clip_boxes(boxes, size, path)
    if keep.all():
        kept = segmentations
    else:
        kept = list(compress(segmentations, keep))
        ids, image_ids, category_ids, boxes, area, iscrowd, lengths = (
            column[keep] for column in (ids, image_ids, category_ids, boxes, area, iscrowd, lengths)
        )
    del segmentations
    boxes = boxes.astype(np.float32)
    return pa.table(
        {
            "annotation_id": ids,
            "image_id": image_ids,
            "split": pa.repeat(split, len(ids)),
            "category_id": category_ids,
            "x": boxes[:, 0],
            "y": boxes[:, 1],
            "w": boxes[:, 2],
            "h": boxes[:, 3],
            "area": area,
            "iscrowd": iscrowd.astype(bool),
            "segmentation": _string_column(kept, lengths, path),
        },
        schema=tables.ANNOTATIONS,
    )


def _is_empty(text: msgspec.Raw) -> bool:
    value = msgspec.json.decode(text)
    return not value or (isinstance(value, list) and all(isinstance(p, list) and not p for p in value))


def _image_sizes(image_ids: np.ndarray, images: pa.Table, annotation_ids: np.ndarray, path: Path) -> np.ndarray:
    """(width, height) of each annotation's image; DataError for an image id the file does not list."""
    known = images.column("image_id").to_numpy()
    order = np.argsort(known, kind="stable")
    position = np.minimum(np.searchsorted(known[order], image_ids), max(len(known) - 1, 0))
    found = known[order][position] == image_ids if len(known) else np.zeros(len(image_ids), bool)
    if not found.all():
        raise DataError(
            f"{path}: annotations {annotation_ids[~found][:5].tolist()} refer to unknown image ids "
            f"({int((~found).sum())} in all)"
        )
    row = order[position]
    width = images.column("width").to_numpy()[row]
    height = images.column("height").to_numpy()[row]
    return np.stack([width, height], axis=1).astype(np.float64)


def _clip_boxes(boxes: np.ndarray, size: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes that overshoot the image (float rounding in LVIS), mark degenerate ones; log counts.

    Only overshooting boxes change: recomputing every width as (x + w) - x would alter them by a rounding.
    """
    x1, y1 = boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (x1 > size[:, 0]) | (y1 > size[:, 1])
    boxes = boxes.copy()
    if outside.any():
        width, height = size[outside, 0], size[outside, 1]
        x0, y0 = boxes[outside, 0].clip(0, width), boxes[outside, 1].clip(0, height)
        right, bottom = x1[outside].clip(0, width), y1[outside].clip(0, height)
        boxes[outside] = np.stack([x0, y0, right - x0, bottom - y0], axis=1)
        log.info("%s: clipped %d boxes to their image", path, int(outside.sum()))
    keep = (boxes[:, 2] > MIN_BOX_SIDE) & (boxes[:, 3] > MIN_BOX_SIDE)
    if not keep.all():
        log.warning("%s: skipped %d degenerate boxes (side <= %g px)", path, int((~keep).sum()), MIN_BOX_SIDE)
    return boxes, keep


def _string_column(texts: list[msgspec.Raw], lengths: np.ndarray, path: Path) -> pa.ChunkedArray:
    """The raw json texts as an Arrow string column, copied once, in chunks of at most 1 GiB."""
    ends = np.cumsum(lengths)
    chunks, start = [], 0
    while start < len(texts) or not chunks:
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + _MAX_CHUNK_BYTES, side="right")), start + 1)
        stop = min(stop, len(texts))
        offsets = np.zeros(stop - start + 1, np.int32)
        np.cumsum(lengths[start:stop], out=offsets[1:])
        data = b"".join(texts[start:stop])
        chunk = pa.StringArray.from_buffers(stop - start, pa.py_buffer(offsets), pa.py_buffer(data))
        try:
            chunk.validate(full=True)
        except pa.ArrowInvalid as error:
            raise DataError(f"{path}: a segmentation is not valid UTF-8 text ({error})") from error
        chunks.append(chunk)
        start = stop
    return pa.chunked_array(chunks, pa.string())


def merge_splits(train: LvisTables, val: LvisTables, train_path: Path, val_path: Path) -> LvisTables:
    """One set of tables for both splits; categories come from the train file and must cover val's.

    Images and annotations stay keyed by (split, id): files exported on their own may both number from 1.
    """

    def ids(table: pa.Table, column: str) -> np.ndarray:
        return table.column(column).to_numpy()

    unknown = np.setdiff1d(ids(val.categories, "category_id"), ids(train.categories, "category_id"))
    if len(unknown):
        raise DataError(f"{val_path}: category ids {unknown[:5].tolist()} are not in {train_path}")
    # each file's ids are unique (checked while reading): the intersection needs no unique() passes
    shared = np.intersect1d(ids(train.images, "image_id"), ids(val.images, "image_id"), assume_unique=True)
    if len(shared):
        log.info(
            "%s numbers %d of its images with ids that %s uses too (each file has its own): images are told "
            "apart by split",
            val_path, len(shared), train_path,
        )  # fmt: skip
    return LvisTables(
        images=pa.concat_tables([train.images, val.images]),
        annotations=pa.concat_tables([train.annotations, val.annotations]),
        categories=train.categories,
    )
