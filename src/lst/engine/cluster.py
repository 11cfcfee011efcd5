"""What a training job asks of its machine: the DDP processes of ``gpus_per_train`` (or of
``processes_per_train`` on a CPU), its CPUs, memory and time limit from its schedule (``gpu_jobs``).

Without torch or Snakemake: the workflow calls it while it builds the DAG, and the cluster profile then only
names partitions. The time limit is an estimate from ``gpu_jobs.seconds_per_image``, to be replaced by the
figure benchmarks/gpu_check.py measures on your GPUs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lst.data.sampling import per_process_batch
from lst.errors import ConfigError


def training_processes(gpus_per_train: int, processes_per_train: int) -> int:
    """The DDP processes of a training job: one per GPU, or ``processes_per_train`` (gloo) on a CPU."""
    if gpus_per_train and processes_per_train not in (1, gpus_per_train):
        raise ConfigError(
            f"processes_per_train: {processes_per_train} with gpus_per_train: {gpus_per_train}; a GPU job runs one "
            "process per GPU: leave processes_per_train at 1 (it is for CPU runs) or set gpus_per_train: 0"
        )
    return gpus_per_train or processes_per_train


@dataclass(frozen=True)
class TrainingJob:
    """One training job's request: ``gpus`` on one node, ``threads`` CPUs, ``mem_mb``, ``runtime`` minutes."""

    gpus: int
    threads: int
    mem_mb: int
    runtime: int
    iterations: int
    batch_size: int  # the global batch
    images_per_process: int

    def resources(self) -> dict[str, int]:
        """As Snakemake resources (snakemake-executor-plugin-slurm: --gpus, --nodes, --cpus-per-gpu, --mem, -t)."""
        return {
            "gpu": self.gpus,
            "nodes": 1,
            "cpus_per_gpu": self.threads // self.gpus,
            "mem_mb": self.mem_mb,
            "runtime": self.runtime,
        }


def training_job(
    schedule: dict[str, Any], backbone: str, gpus: int, gpu_jobs: dict[str, Any], batch_key: str
) -> TrainingJob:
    """The job that trains ``schedule`` (a train_base or train_phase section: iterations, global batch_size)
    of a ``backbone`` model on ``gpus`` GPUs: ``gpu_jobs.seconds_per_image[backbone]`` seconds per image on
    one GPU, times ``margin``, plus ``setup_minutes``."""
    images_per_process = per_process_batch(schedule["batch_size"], gpus, batch_key)
    seconds = gpu_jobs["seconds_per_image"].get(backbone)
    if seconds is None:
        known = ", ".join(sorted(gpu_jobs["seconds_per_image"])) or "none"
        raise ConfigError(
            f"gpu_jobs.seconds_per_image: no figure for model.backbone {backbone!r} (given: {known}); add one "
            "(seconds per training image on one GPU) to size its jobs' time limit"
        )
    minutes = schedule["iterations"] * images_per_process * seconds * gpu_jobs["margin"] / 60
    return TrainingJob(
        gpus=gpus,
        threads=gpu_jobs["cpus_per_gpu"] * gpus,
        mem_mb=gpu_jobs["mem_mb_per_gpu"] * gpus,
        runtime=gpu_jobs["setup_minutes"] + math.ceil(minutes),
        iterations=schedule["iterations"],
        batch_size=schedule["batch_size"],
        images_per_process=images_per_process,
    )
