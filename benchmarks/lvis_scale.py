"""The data steps at LVIS v1 scale, through Snakemake: prepare_data + split + build_replay (phase 1).

    python benchmarks/lvis_scale.py [--work /tmp/lst_lvis_scale] [--images 100000] [--cores 2]

Generates (once; --regenerate to redo) a synthetic LVIS-v1-shaped train/val pair with lst.data.synthetic_lvis
(100k train images, about 1.28M polygon annotations, 1,203 classes, a 1.1 GB train json), writes a config
that is config/lvis_v1.yaml pointed at it, removes earlier results and runs
``snakemake <work>/results/<name>/<method>/phase1/replay.parquet`` in ``<work>``. Prints each rule's wall
time, CPU time and peak RSS from the benchmark files every rule writes, the whole snakemake run's wall
time (DAG building and job start-up included), the peak RSS of any process of the run, the file sizes and
the load average before and after (other work on the machine slows the run down: compare runs at low load).
Goal: at most 30 s in all and 4 GB peak RSS on 2 cores. --strict exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lst.data.synthetic_lvis import SyntheticLvisSpec, generate

REPO = Path(__file__).resolve().parents[1]
NAME = "lvis_v1_synthetic"
GOAL_SECONDS, GOAL_RSS_MB = 30.0, 4096.0


def ensure_data(data_dir: Path, spec: SyntheticLvisSpec, regenerate: bool) -> None:
    files = [data_dir / "lvis_v1_train.json", data_dir / "lvis_v1_val.json"]
    stamp = data_dir / "spec.yaml"  # the spec the files were made with: another spec makes them again
    wanted = yaml.safe_dump(spec.__dict__)
    if not regenerate and all(f.is_file() for f in files) and stamp.is_file() and stamp.read_text() == wanted:
        print(f"reusing {data_dir}")
        return
    started = time.perf_counter()
    summary = generate(data_dir, spec)
    stamp.write_text(wanted)
    print(
        f"generated {data_dir} in {time.perf_counter() - started:.1f} s: {summary['images']} images, "
        f"{summary['annotations']} annotations, f/c/r {summary['frequency']}"
    )


def write_config(work: Path, data_dir: Path, method: str) -> Path:
    config = yaml.safe_load((REPO / "config" / "lvis_v1.yaml").read_text())
    config["dataset"] = {
        "name": NAME,
        "train_json": str(data_dir / "lvis_v1_train.json"),
        "val_json": str(data_dir / "lvis_v1_val.json"),
        "image_root": str(data_dir / "images"),  # no pixels: the data steps never open an image
    }
    config["methods"] = [method]
    config["weights"] = None
    path = work / "lvis_scale.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_benchmark(path: Path) -> dict[str, float]:
    with open(path) as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    return {key: float(row[key]) for key in ("s", "cpu_time", "max_rss") if row.get(key, "NA") != "NA"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lst_lvis_scale"), help="data and results (large)")
    parser.add_argument("--images", type=int, default=SyntheticLvisSpec.train_images, help="training images")
    parser.add_argument("--val-images", type=int, default=SyntheticLvisSpec.val_images)
    parser.add_argument("--method", default="lst", help="a replay method: its phase-1 replay index is the target")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--regenerate", action="store_true", help="generate the json files even if present")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args()

    work = args.work.resolve()
    data_dir = work / "data"
    spec = SyntheticLvisSpec(train_images=args.images, val_images=args.val_images)
    ensure_data(data_dir, spec, args.regenerate)
    config = write_config(work, data_dir, args.method)
    results = work / "results" / NAME
    shutil.rmtree(results, ignore_errors=True)  # every rule runs, from the json on
    target = f"results/{NAME}/{args.method}/phase1/replay.parquet"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(config), "--cores", str(args.cores), target]  # fmt: skip

    load_before = os.getloadavg()
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    total = time.perf_counter() - started
    load_after = os.getloadavg()
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-5000:], sep="\n")
        print(f"snakemake failed ({run.returncode}); logs in {results / 'logs'}")
        return 1
    # ru_maxrss of the children: the largest RSS of any process of the run, snakemake's own included
    peak_run = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    rules = {
        "prepare_data": results / "benchmarks" / "prepare_data.tsv",
        "split": results / "benchmarks" / "split.tsv",
        "build_replay": results / "benchmarks" / "build_replay" / f"{args.method}_phase1.tsv",
    }
    print(f"\n{'rule':<14} {'wall s':>7} {'cpu s':>7} {'max_rss MB':>11}")
    rule_total, rule_peak = 0.0, 0.0
    for rule, path in rules.items():
        figures = read_benchmark(path)
        rule_total += figures["s"]
        rule_peak = max(rule_peak, figures.get("max_rss", 0.0))
        cpu = f"{figures['cpu_time']:7.2f}" if "cpu_time" in figures else f"{'NA':>7}"
        print(f"{rule:<14} {figures['s']:7.2f} {cpu} {figures.get('max_rss', float('nan')):11.0f}")
    print(f"{'rules':<14} {rule_total:7.2f}")
    print(f"{'snakemake':<14} {total:7.2f}   (whole run: DAG, scheduling and job start-up included)")
    print(f"peak RSS: {rule_peak:.0f} MB in a rule, {peak_run:.0f} MB in any process of the run")
    sizes = {p.name: p.stat().st_size / 1e6 for p in sorted(data_dir.glob("*.json"))}
    sizes |= {p.name: p.stat().st_size / 1e6 for p in sorted((results / "data").glob("*.parquet"))}
    print("files (MB): " + ", ".join(f"{name} {size:.0f}" for name, size in sizes.items()))
    print(f"load average (1/5/15 min): before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} CPUs")  # fmt: skip
    met = total <= GOAL_SECONDS and max(rule_peak, peak_run) <= GOAL_RSS_MB
    print(f"goal (<= {GOAL_SECONDS:.0f} s, <= {GOAL_RSS_MB / 1024:.0f} GB): {'met' if met else 'missed'}")
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
