"""A training job killed with SIGKILL resumes from its last checkpoint and ends with the same weights."""

import os
import signal
import subprocess
import time

import torch
from workflow_copy import run_snakemake, snakemake_command, workflow_copy

TARGET = "results/demo/seed0/base/phase0/model.pt"
LONGER = {"train_base": ["train_base.iterations=40", "train_base.checkpoint_period=10", "train_base.log_period=10"]}


def test_sigkill_then_rerun_resumes_to_identical_weights(tmp_path):
    reference = workflow_copy(tmp_path / "reference", preset="tiny", overrides=LONGER)
    run_snakemake(reference, TARGET)

    killed = workflow_copy(tmp_path / "killed", preset="tiny", overrides=LONGER)
    process = subprocess.Popen(snakemake_command(TARGET), cwd=killed, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = killed / "results/demo/seed0/base/phase0/train/last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "no checkpoint was written before the deadline"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / TARGET).exists()  # nothing that looks finished

    run_snakemake(killed, "--unlock")
    run_snakemake(killed, TARGET)
    log = (killed / "results/demo/logs/train_base/seed0_base.log").read_text()
    assert "resuming from results/demo/seed0/base/phase0/train/last.pt at iteration" in log
    resumed_at = int(log.split("at iteration ")[1].split()[0])
    assert 10 <= resumed_at < 40

    expected = torch.load(reference / TARGET, weights_only=True)["model"]
    resumed = torch.load(killed / TARGET, weights_only=True)["model"]
    assert all(torch.equal(value, resumed[key]) for key, value in expected.items())
