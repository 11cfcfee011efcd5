"""Teacher logits as Parquet (lst) against the released code's JSON: file size and load time, in one run.

    python benchmarks/logits_format.py [--rows 20000] [--logits 271]

The logits are those of LVIS v0.5 phase 1, a teacher with 1 + 270 outputs; the default 20k rows are
10k boxes with and without flip (phase 1 has several times more: the JSON side needs about 1 GB of
RAM per 20k rows to load). The JSON holds the same numbers the way the released code stored them (nested
lists keyed by image and annotation); loading means getting every logit into memory as floats.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lst.data.tables import logits_schema


def make_table(rows: int, num_logits: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    boxes = rows // 2
    image_id = np.repeat(np.arange(boxes // 4 + 1, dtype=np.int64), 4)[:boxes]
    annotation_id = np.arange(boxes, dtype=np.int64)
    logits = rng.uniform(-1, 1, size=(rows, num_logits)).astype(np.float32)
    flat = pa.array(logits.reshape(-1), type=pa.float32())
    return pa.Table.from_arrays(
        [
            pa.array(np.concatenate([image_id, image_id])),
            pa.array(np.concatenate([annotation_id, annotation_id])),
            pa.array(np.repeat([False, True], boxes)),
            pa.FixedSizeListArray.from_arrays(flat, num_logits),
        ],
        schema=logits_schema(num_logits),
    )


def as_seed_json(table: pa.Table) -> dict:
    """{image_id: {annotation_id: {"logits": [...], "logits_flip": [...]}}}, as the released code kept them."""
    out: dict = {}
    logits = table.column("logits").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    for image_id, annotation_id, flip, row in zip(
        table.column("image_id").to_pylist(),
        table.column("annotation_id").to_pylist(),
        table.column("flip").to_pylist(),
        logits.tolist(),
        strict=True,
    ):
        out.setdefault(str(image_id), {}).setdefault(str(annotation_id), {})["logits_flip" if flip else "logits"] = row
    return out


def timed(function, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="(box, flip) rows")
    parser.add_argument("--logits", type=int, default=271, help="background + old classes")
    args = parser.parse_args()
    table = make_table(args.rows, args.logits)
    with tempfile.TemporaryDirectory() as folder:
        parquet_path, json_path = Path(folder) / "logits.parquet", Path(folder) / "logits.json"
        pq.write_table(table, parquet_path)
        json_path.write_text(json.dumps(as_seed_json(table)))

        def load_parquet() -> np.ndarray:
            logits = pq.read_table(parquet_path).column("logits").combine_chunks()
            return logits.flatten().to_numpy().reshape(len(logits), -1)

        def load_json() -> dict:
            return json.loads(json_path.read_text())

        parquet_size, json_size = parquet_path.stat().st_size, json_path.stat().st_size
        parquet_time, json_time = timed(load_parquet), timed(load_json, repeats=1)
    print(f"{args.rows} rows x {args.logits} float32 logits")
    print(f"size:  parquet {parquet_size / 2**20:8.1f} MiB   json {json_size / 2**20:8.1f} MiB   "
          f"json/parquet {json_size / parquet_size:5.1f}x")  # fmt: skip
    print(f"load:  parquet {parquet_time:8.3f} s     json {json_time:8.3f} s     "
          f"json/parquet {json_time / parquet_time:5.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
