"""A training job's processes, global batch and cluster request: lst.engine.cluster by hand, and the dry run of the
LVIS v1 paper config on 8 GPUs per job through profiles/slurm, as docs/cluster.md shows it."""

import re

import pytest
from workflow_copy import paper_workflow, run_snakemake

from lst.engine.cluster import training_job, training_processes
from lst.errors import ConfigError

GPU_JOBS = {"cpus_per_gpu": 8, "mem_mb_per_gpu": 32000, "seconds_per_image": {"resnet50_fpn": 0.25},
            "margin": 1.5, "setup_minutes": 15}  # fmt: skip
SLURM = ("--profile", "profiles/slurm", "--workflow-profile", "none")


def test_processes_are_the_gpus_or_the_cpu_processes():
    assert training_processes(8, 1) == 8
    assert training_processes(8, 8) == 8
    assert training_processes(0, 3) == 3
    with pytest.raises(ConfigError, match=r"^processes_per_train: 4 with gpus_per_train: 2; "):
        training_processes(2, 4)


def test_a_job_is_sized_from_its_schedule_by_hand():
    # 40,000 iterations of 16 images on 8 GPUs: 2 images per GPU, 40,000 x 2 x 0.25 s x 1.5 = 500 min, + 15
    job = training_job({"iterations": 40000, "batch_size": 16}, "resnet50_fpn", 8, GPU_JOBS, "train_phase.batch_size")
    assert (job.images_per_process, job.threads, job.mem_mb, job.runtime) == (2, 64, 256000, 515)
    assert job.resources() == {"gpu": 8, "nodes": 1, "cpus_per_gpu": 8, "mem_mb": 256000, "runtime": 515}
    # 10 iterations x 1 image x 0.25 s x 1.5 = 3.75 s: a started minute counts
    assert training_job({"iterations": 10, "batch_size": 4}, "resnet50_fpn", 4, GPU_JOBS, "b").runtime == 16
    with pytest.raises(ConfigError, match=r"^train_base\.batch_size: 8 images .* across 3 training process"):
        training_job({"iterations": 1, "batch_size": 8}, "resnet50_fpn", 3, GPU_JOBS, "train_base.batch_size")
    with pytest.raises(ConfigError, match=r"^gpu_jobs\.seconds_per_image: no figure for model\.backbone 'small'"):
        training_job({"iterations": 1, "batch_size": 8}, "small", 8, GPU_JOBS, "train_base.batch_size")


@pytest.fixture(scope="module")
def lvis_v1(tmp_path_factory):
    return paper_workflow(tmp_path_factory.mktemp("lvis_v1"), "lvis_v1", 1203)


def job_resources(dry: str, rule: str) -> list[dict[str, str]]:
    """The resources of each job of ``rule`` that a dry run lists."""
    blocks = re.findall(rf"^rule {rule}:\n(.*?)\n\n", dry, re.MULTILINE | re.DOTALL)
    return [dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", b)[1])) for b in blocks]


def test_the_v1_dry_run_on_8_gpus_shows_each_jobs_request(lvis_v1):
    """v1's paper config asks 8 GPUs per training job: one node, 1 image per GPU for the base (batch 8), 2 for the
    phases (16), and time limits from each schedule (hand-computed from gpu_jobs' defaults: 0.25 s per image on
    one GPU, margin 1.5, 15 min set-up): the joint models' 567,500 iterations get 6.3x the base model's."""
    dry = run_snakemake(lvis_v1, "-n", *SLURM)
    minutes = {"train_base": 15 + 547, "train_joint": 15 + 3547, "train_phase": 15 + 500}  # 87,500 / 567,500 / 40,000
    for rule, runtime in minutes.items():
        jobs = job_resources(dry.stdout, rule)
        assert jobs, rule
        for resources in jobs:
            assert resources["gpu"] == "8" and resources["nodes"] == "1" and resources["cpus_per_gpu"] == "8", rule
            assert (resources["mem_mb"], resources["runtime"]) == ("256000", str(runtime)), rule
    plan = dry.stderr
    assert "lst: train_base base: gpu=8 on nodes=1, 8 processes x 1 image(s) = global batch 8, 87500 iter" in plan
    assert "lst: train_joint joint: gpu=8 on nodes=1, 8 processes x 1 image(s) = global batch 8, 567500 iter" in plan
    assert "lst: train_phase lst: gpu=8 on nodes=1, 8 processes x 2 image(s) = global batch 16, 40000 iter" in plan
    assert plan.count("threads=64, mem_mb=256000") == 5  # base, joint, joint_rfs, finetune, lst
    assert "--nproc-per-node=8" in run_snakemake(lvis_v1, "-n", "-p", *SLURM).stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--set-resources", "train_base:gpu=1"), "lst: train_base: set-resources gpu (from the profile"),
        (("--set-threads", "train_phase=4"), "lst: train_phase: set-threads (from the profile or the command line)"),
        (("--config", "gpus_per_train=3"), "lst: train_base.batch_size: 8 images per iteration (the global batch) do "
                                           "not split evenly across 3 training process(es)"),
        (("--config", "gpus_per_train=0", "processes_per_train=3"), "lst: train_base.batch_size: 8 images"),
        (("--config", "processes_per_train=4"), "lst: processes_per_train: 4 with gpus_per_train: 8;"),
    ],
)  # fmt: skip
def test_a_request_that_would_fail_in_the_job_is_refused_at_dag_build(lvis_v1, args, message):
    result = run_snakemake(lvis_v1, "-n", *SLURM, *args, check=False)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert "Building DAG" not in result.stdout + result.stderr
