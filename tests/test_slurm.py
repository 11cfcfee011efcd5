"""profiles/slurm on a real one-node Slurm cluster (scripts/slurm_one_node.sh): the tiny DAG is submitted job by
job through sbatch, each job gets what the profile asks for, and the results equal a local run's.

The cluster's node is declared as large as the profile's largest job and its partitions are named after the
profile's, so the profile's requests go to sbatch unchanged (partition, GPUs, CPUs per GPU, memory, time). What
the command line adds is what a cluster without accounting needs (--slurm-status-command squeue; no account),
--workflow-profile none (docs/cluster.md), and the shared `--cores 2` of snakemake_command, which caps every job's
threads at 2 as in the local run, so that both runs compute the same floats."""

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from workflow_copy import REPO, run_snakemake, snakemake_command, workflow_copy

SCRIPT = REPO / "scripts" / "slurm_one_node.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol")
GPU_RULES = {"train_base", "train_meta", "train_joint", "train_phase", "extract_logits", "evaluate"}
TRAIN_RULES = {"train_base", "train_joint", "train_phase"}  # sized by the workflow config (gpus_per_train, gpu_jobs)
LIGHT_RULES = {"make_demo", "prepare_data", "check_data", "split", "trim_weights", "build_replay", "report"}
LOCAL_RULES = {"all", "link_base"}  # `localrule: True`: never submitted
LOCK = Path(tempfile.gettempdir()) / "lst-slurm-one-node.lock"  # one such cluster per machine at a time

# base + 1 phase of one method, evaluated once: every kind of job, light and GPU, in about 10 jobs.
# A smaller val set, and low-score detections kept (at most 5 per image) so that metrics are not all 0.
TARGET = "results/demo/seed0/finetune/phase1/eval/metrics.parquet"
# The training jobs on 1 GPU each (on this CPU node: device auto is the CPU), 3 s per image on the tiny model.
CONFIG = {
    "preset": "tiny",
    "methods": ["finetune"],
    "phases": {"sizes": [12, 12]},
    "gpus_per_train": 1,
    "gpu_jobs": {
        "cpus_per_gpu": 8,
        "mem_mb_per_gpu": 48000,
        "seconds_per_image": {"small": 3.0},
        "margin": 1.5,
        "setup_minutes": 5,
    },
    "overrides": {
        "make_demo": ["+demo.num_val_images=60"],
        "evaluate": ["eval.score_thresh_incremental=0.0", "eval.max_dets=5"],
    },
}
# outputs that must be byte-identical: parsing, split, replay stream
SAME_BYTES = [
    "results/demo/data/images.parquet",
    "results/demo/data/annotations.parquet",
    "results/demo/data/categories.parquet",
    "results/demo/split/categories.parquet",
    "results/demo/split/images.parquet",
    "results/demo/split/phases.parquet",
    "results/demo/seed0/finetune/phase1/replay.parquet",
]
SAME_WEIGHTS = ["results/demo/seed0/base/phase0/model.pt", "results/demo/seed0/finetune/phase1/model.pt"]
SAME_TABLES = [
    f"results/demo/seed0/finetune/phase1/eval/{name}.parquet" for name in ("metrics", "per_class", "detections")
]


def load_profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def rule_resources(profile: dict, rule: str) -> dict:
    """A rule's resources as the profile gives them: default-resources updated by set-resources."""
    return {**profile.get("default-resources", {}), **profile.get("set-resources", {}).get(rule, {})}


# CONFIG's training jobs by hand: tiny's 12 (train_base) and 6 (train_phase) iterations of 4 images on 1 GPU,
# x 3 s x 1.5 = 3.6 and 1.8 minutes, started minutes counted, + 5
TRAIN_MINUTES = {"train_base": 5 + 4, "train_phase": 5 + 2}


def expected_request(profile: dict, rule: str) -> dict:
    """What Slurm must grant a job of ``rule`` (snakemake-executor-plugin-slurm 2.x: --gpus=gpu and
    --cpus-per-gpu=cpus_per_gpu for a GPU job, --cpus-per-task=cpus_per_task or the rule's threads (1 for the
    light rules) otherwise, --mem mem_mb, -t runtime in minutes). The training rules' come from CONFIG."""
    resources = rule_resources(profile, rule)
    if rule in TRAIN_RULES:
        jobs = CONFIG["gpu_jobs"]
        resources |= {"gpu": CONFIG["gpus_per_train"], "cpus_per_gpu": jobs["cpus_per_gpu"],
                      "mem_mb": jobs["mem_mb_per_gpu"] * CONFIG["gpus_per_train"],
                      "runtime": TRAIN_MINUTES.get(rule, 0)}  # fmt: skip
    gpus = int(resources.get("gpu", 0))
    cpus = int(resources["cpus_per_gpu"]) * gpus if gpus else int(resources.get("cpus_per_task", 1))
    return {
        "partition": resources.get("slurm_partition"),
        "gpus": gpus,
        "cpus": cpus,
        "mem_mb": int(resources["mem_mb"]),
        "minutes": int(resources["runtime"]),
    }


def test_profile_names_real_rules_and_complete_requests():
    """No cluster needed: the profile's rule names exist, and every GPU rule says what it needs."""
    profile = load_profile()
    rules = set(re.findall(r"^rule (\w+):", "\n".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk")),
                           re.MULTILINE))  # fmt: skip
    assert profile["executor"] == "slurm"
    assert GPU_RULES | LIGHT_RULES <= rules
    assert set(profile["set-resources"]) <= rules and set(profile["set-threads"]) <= rules
    # the plugin takes cpus_per_task over cpus_per_gpu: a default one would take the GPU jobs' CPUs away
    assert "cpus_per_task" not in profile["default-resources"]
    for rule in GPU_RULES - TRAIN_RULES:
        resources = rule_resources(profile, rule)
        assert {"slurm_partition", "gpu", "cpus_per_gpu", "mem_mb", "runtime"} <= set(resources), rule
        assert profile["set-threads"][rule] == resources["cpus_per_gpu"] * resources["gpu"], rule
    for rule in TRAIN_RULES:  # the workflow derives the rest: a profile's value would override it (refused)
        assert set(profile["set-resources"][rule]) == {"slurm_partition"}, rule
        assert rule not in profile["set-threads"], rule
    for rule in LIGHT_RULES:
        assert expected_request(profile, rule)["gpus"] == 0, rule


@dataclass
class Cluster:
    dir: Path
    log: Path  # slurmctld's log


def cluster_size(profile: dict) -> dict[str, str]:
    """scripts/slurm_one_node.sh settings: a node as large as the profile's largest job, its partitions."""
    requests = [expected_request(profile, rule) for rule in GPU_RULES | LIGHT_RULES]
    partitions = [profile.get("default-resources", {}).get("slurm_partition")]
    partitions += [r["partition"] for r in requests]
    partitions = list(dict.fromkeys(p for p in partitions if p)) or ["main"]
    return {
        "LST_SLURM_PARTITIONS": " ".join(partitions),
        "LST_SLURM_CPUS": str(max(max(r["cpus"] for r in requests), os.cpu_count() or 1)),
        "LST_SLURM_MEM_MB": str(max(r["mem_mb"] for r in requests)),
        "LST_SLURM_GPUS": str(max(r["gpus"] for r in requests)),
    }


@pytest.fixture(scope="module")
def slurm_cluster():
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        pytest.skip(f"Slurm not installed (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("a one-node Slurm cluster needs root (munged, slurmd)")
    with open(LOCK, "w") as lock:
        deadline = time.monotonic() + 900
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test's one-node Slurm cluster held {LOCK} for 15 minutes")
                time.sleep(2)
        directory = Path(tempfile.mkdtemp(prefix="lst-slurm-"))  # not under pytest's 0700 folders: munge reads it
        env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"} | cluster_size(load_profile())
        try:
            start = subprocess.run(["bash", str(SCRIPT), "start", str(directory)], env=env, capture_output=True,
                                   text=True, timeout=120)  # fmt: skip
            if start.returncode == 2:
                pytest.skip(f"no Slurm cluster here: {start.stderr.strip()}")
            assert start.returncode == 0, f"slurm_one_node.sh start failed:\n{start.stdout}\n{start.stderr}"
            yield Cluster(directory, directory / "log" / "slurmctld.log")
        finally:
            stop = subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], env=env, capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
            shutil.rmtree(directory, ignore_errors=True)
            assert stop.returncode == 0, f"slurm_one_node.sh stop failed:\n{stop.stderr}"


def slurm_jobs() -> list[dict[str, str]]:
    """Every job slurmctld knows (finished ones stay for MinJobAge=3600 s), as scontrol's key=value fields."""
    out = subprocess.run(["scontrol", "--oneliner", "show", "job"], capture_output=True, text=True, check=True)
    if "No jobs in the system" in out.stdout:
        return []
    return [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.stdout.splitlines() if line.strip()]


def megabytes(value: str) -> int:
    number, unit = re.fullmatch(r"([\d.]+)([MGT]?)", value).groups()
    return round(float(number) * 1024 ** "MGT".index(unit or "M"))


def minutes(limit: str) -> int:
    days, _, clock = limit.rpartition("-")
    hours, mins, secs = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins + (secs > 0)


def job_stats(output: str) -> Counter:
    """The 'Job stats' table snakemake prints: jobs per rule."""
    table = output.split("Job stats:")[1].split("total")[0]
    return Counter({rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)})


@pytest.mark.slurm
def test_tiny_dag_runs_through_sbatch_as_the_profile_asks_and_matches_a_local_run(slurm_cluster, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    monkeypatch.delenv("SLURM_CONF", raising=False)  # the cluster's configuration is the default one
    profile = load_profile()
    slurm_root = workflow_copy(tmp_path / "slurm", **CONFIG)
    args = ["--profile", "profiles/slurm", "--workflow-profile", "none", "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs"]  # fmt: skip
    if any("slurm_account" in rule_resources(profile, rule) for rule in GPU_RULES | LIGHT_RULES):
        # no accounting here: the plugin would check the account with sacctmgr; the rest as the profile says
        default = {k: v for k, v in profile["default-resources"].items() if k != "slurm_account"}
        args += ["--default-resources", *(f"{k}={v!r}" for k, v in default.items())]
        args += ["--set-resources"] + [f"{rule}:{k}={v!r}" for rule, resources in profile["set-resources"].items()
                                       for k, v in resources.items() if k != "slurm_account"]  # fmt: skip
    command = snakemake_command(TARGET, *args)
    try:
        slurm = subprocess.run(command, cwd=slurm_root, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"snakemake through Slurm ran over 15 minutes:\n{error.stderr}")
    output = slurm.stdout + slurm.stderr
    assert slurm.returncode == 0, f"snakemake --profile profiles/slurm failed:\n{output[-6000:]}"
    assert "Using profile profiles/slurm for setting default command line arguments" in output

    # every job of the DAG went through sbatch to this slurmctld, and finished there
    stats = job_stats(output)
    assert {"train_base", "train_phase", "evaluate", "split", "build_replay"} <= set(stats)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    jobs = {job["JobId"]: job for job in slurm_jobs()}
    assert sorted(submitted.values(), key=int) == sorted(jobs, key=int)
    assert len(jobs) == sum(n for rule, n in stats.items() if rule not in LOCAL_RULES)
    submissions = re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", slurm_cluster.log.read_text())
    assert sorted(submissions, key=int) == sorted(jobs, key=int)
    ran = Counter()
    for job in jobs.values():
        rule = job["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        ran[rule] += 1
        assert job["JobState"] == "COMPLETED", job
        assert job["WorkDir"] == str(slurm_root)
        # the plugin's log of the job: the job's own snakemake ran the rule inside the allocation
        log = Path(job["StdOut"])
        assert log.is_relative_to(slurm_root / ".snakemake" / "slurm_logs" / f"rule_{rule}")
        assert f"rule {rule}:" in log.read_text()
        # what the job got is what the profile asks for
        request = expected_request(profile, rule)
        assert job["Partition"] == request["partition"], (rule, job["Partition"])
        assert int(job["NumCPUs"]) == request["cpus"], (rule, job["NumCPUs"])
        gpus = f"gres:gpu:{request['gpus']}" if request["gpus"] else None
        assert job.get("TresPerJob") == gpus, (rule, job.get("TresPerJob"))  # --gpus, on a node of counted GPUs
        assert megabytes(job["MinMemoryNode"]) == request["mem_mb"], (rule, job["MinMemoryNode"])
        assert minutes(job["TimeLimit"]) == request["minutes"], (rule, job["TimeLimit"])
        if rule in TRAIN_RULES:
            assert job["NumNodes"] == "1", (rule, job["NumNodes"])  # torchrun --standalone: one node
    assert ran == Counter({rule: n for rule, n in stats.items() if rule not in LOCAL_RULES})

    # the same DAG on the local machine gives the same results
    local_root = workflow_copy(tmp_path / "local", **CONFIG)
    local = run_snakemake(local_root, TARGET)
    assert job_stats(local.stdout + local.stderr) == stats
    for name in SAME_BYTES:
        assert (slurm_root / name).read_bytes() == (local_root / name).read_bytes(), name
    for name in SAME_WEIGHTS:
        ours, theirs = (torch.load(root / name, weights_only=True) for root in (slurm_root, local_root))
        assert ours["category_ids"] == theirs["category_ids"], name
        assert ours["model"].keys() == theirs["model"].keys(), name
        for key, tensor in ours["model"].items():
            assert torch.equal(tensor, theirs["model"][key]), f"{name}: {key}"
    for name in SAME_TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(slurm_root / name), pd.read_parquet(local_root / name),
                                      check_exact=True)  # fmt: skip
    metrics = pd.read_parquet(slurm_root / SAME_TABLES[0])
    assert (metrics["value"] > 0).any()  # a comparison of real numbers, not of zeros
    assert len(pd.read_parquet(slurm_root / SAME_TABLES[2])) > 0
