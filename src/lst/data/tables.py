"""Declared schemas of every Parquet artifact, and checked, atomic reading and writing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lst.errors import TableError
from lst.io import atomic_path

_ids = pa.list_(pa.int64())

# Images and annotations are keyed by (split, id): a train and a val file may reuse each other's ids.
IMAGES = pa.schema(
    [
        ("image_id", pa.int64()),
        ("split", pa.string()),  # "train" or "val"
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("file_name", pa.string()),  # relative to its split's folder of dataset.image_root
        ("neg_category_ids", _ids),  # COCO-format files: every category not annotated on the image
        ("not_exhaustive_category_ids", _ids),
    ]
)

ANNOTATIONS = pa.schema(
    [
        ("annotation_id", pa.int64()),
        ("image_id", pa.int64()),
        ("split", pa.string()),
        ("category_id", pa.int64()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("w", pa.float32()),
        ("h", pa.float32()),
        ("area", pa.float64()),
        ("iscrowd", pa.bool_()),  # a COCO crowd region: never trained on, ignored by the evaluation
        ("segmentation", pa.string()),  # the json text of the polygons or RLE, decoded on use
    ]
)

CATEGORIES = pa.schema(
    [
        ("category_id", pa.int64()),
        ("name", pa.string()),
        ("frequency", pa.string()),  # as given in the json (r/c/f), "" when absent
    ]
)

PHASE_PLAN = pa.schema(
    [
        ("category_id", pa.int64()),
        ("name", pa.string()),
        ("frequency", pa.string()),
        ("instance_count", pa.int64()),
        ("image_count", pa.int64()),
        ("rank", pa.int64()),  # label order: 1-based position in the sorted order = the model's label
        ("phase", pa.int32()),  # -1: beyond the configured phases, never learned
    ]
)

PHASE_PLAN_IMAGES = pa.schema(
    [
        ("image_id", pa.int64()),
        ("split", pa.string()),
        # smallest phase whose classes appear in the image: the image belongs to phase k's
        # cumulative set for every k >= first_phase; null when it holds no class of the plan
        ("first_phase", pa.int32()),
    ]
)

PHASES = pa.schema(
    [
        ("phase", pa.int32()),
        ("num_classes", pa.int64()),
        ("first_rank", pa.int64()),  # the phase's labels (the plan's rank column), first to last
        ("last_rank", pa.int64()),
        ("f", pa.int64()),
        ("c", pa.int64()),
        ("r", pa.int64()),
        ("instances", pa.int64()),  # training instances of the phase's classes
        ("min_instances", pa.int64()),  # of its class with the fewest
        ("max_instances", pa.int64()),
        ("val_instances", pa.int64()),
        ("train_images", pa.int64()),  # cumulative: images of phases 0..k
        ("val_images", pa.int64()),
    ]
)

REPLAY = pa.schema(
    [
        ("epoch", pa.int32()),
        ("rank", pa.int32()),  # DDP process rank: the training process (GPU) that consumes the sample
        ("position", pa.int64()),  # order within that process's stream
        ("image_id", pa.int64()),
        ("category_id", pa.int64()),  # the sample's target class (LVIS id)
        ("flip", pa.bool_()),  # horizontal flip applied to this sample
    ]
)


def logits_schema(num_logits: int) -> pa.Schema:
    return pa.schema(
        [
            ("image_id", pa.int64()),
            ("annotation_id", pa.int64()),
            ("flip", pa.bool_()),
            ("logits", pa.list_(pa.float32(), num_logits)),
        ]
    )


DETECTIONS = pa.schema(
    [
        ("image_id", pa.int64()),
        ("category_id", pa.int64()),
        ("score", pa.float32()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("w", pa.float32()),
        ("h", pa.float32()),
        ("rle_counts", pa.binary()),  # pycocotools compressed RLE of the mask, image-sized
    ]
)

METRICS = pa.schema([("iou_type", pa.string()), ("metric", pa.string()), ("value", pa.float64())])

PER_CLASS = pa.schema(
    [
        ("iou_type", pa.string()),
        ("category_id", pa.int64()),
        ("name", pa.string()),
        ("frequency", pa.string()),
        ("phase", pa.int32()),
        ("instance_count", pa.int64()),
        ("num_gt", pa.int64()),
        ("ap", pa.float64()),
    ]
)

SUMMARY = pa.schema(
    [
        ("seed", pa.int32()),
        ("method", pa.string()),
        ("phase", pa.int32()),
        ("iou_type", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)

# periodic evaluation during training: the metrics of METRICS at each evaluated iteration
EVAL_CURVE = pa.schema(
    [("iteration", pa.int64()), ("iou_type", pa.string()), ("metric", pa.string()), ("value", pa.float64())]
)


def write_table(df: pd.DataFrame | pa.Table, path: str | os.PathLike, schema: pa.Schema, **options: Any) -> None:
    """Write ``df`` (pandas or Arrow) with exactly ``schema`` (columns in schema order), atomically.

    ``options`` go to ``pyarrow.parquet.write_table`` (e.g. a per-column ``compression``)."""
    columns = df.column_names if isinstance(df, pa.Table) else df.columns
    missing = [name for name in schema.names if name not in columns]
    if missing:
        raise TableError(f"{path}: cannot write, columns {missing} are missing")
    if isinstance(df, pa.Table):
        table = df.select(schema.names).cast(schema)
    else:
        table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp, **options)


def write_arrow(table: pa.Table, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | os.PathLike, schema: pa.Schema, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file and check it carries the declared ``schema``."""
    return read_arrow(path, schema, columns).to_pandas()


def read_arrow(path: str | os.PathLike, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: file does not exist")
    try:
        found = pq.read_schema(path)
    except Exception as error:
        raise TableError(f"{path}: not a readable Parquet file ({error})") from error
    for field in schema:
        if field.name not in found.names:
            raise TableError(f"{path}: column {field.name!r} is missing")
        if not found.field(field.name).type.equals(field.type):
            raise TableError(
                f"{path}: column {field.name!r} has type {found.field(field.name).type}, expected {field.type}"
            )
    return pq.read_table(path, columns=columns or schema.names)
