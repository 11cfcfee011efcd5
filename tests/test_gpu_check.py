"""benchmarks/gpu_check.py, run on the CPU with --smoke so that the GPU check cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
HEADER = "## GPU: `python benchmarks/gpu_check.py`"
BEFORE = "# Benchmark results\n\n## Before\n\nkept text\n\n"
AFTER = "## After\n\nkept too\n"


def run_check(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=REPO)


def table_rows(section: str, columns: int) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines() if line[:2] == "| "]
    return [row for row in rows if len(row) == columns and not row[0].startswith(("training loop", "amp"))]


def test_smoke_run_replaces_the_gpu_section_with_its_figures(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(BEFORE + f"{HEADER}\n\nold figures\n\n" + AFTER)
    done = run_check("--smoke", "--threads", "1", "--out", str(results))
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text()
    assert text.startswith(BEFORE + HEADER + "\n") and text.endswith("\n\n" + AFTER)
    assert text.count(HEADER) == 1 and "old figures" not in text
    section = text[len(BEFORE) : -len(AFTER) - 1]
    assert section in done.stdout  # the figures written are the figures printed

    section, _, loss_table = section.partition("The RoI classification losses")
    training = {(row[0], row[1], row[2]): row for row in table_rows(section, 6)}
    assert len(training) == 7
    for (*_, amp), row in training.items():
        if amp == "fp16":  # fp16 needs a GPU: said, not measured
            assert row[3] == "-" and "fp16 needs a CUDA device" in row[5]
        else:
            assert float(row[3]) > 0 and row[4] == "-" and row[5] == "", row  # no GPU memory on the CPU
    assert ("bare torchvision loop", "torchvision maskrcnn_resnet50_fpn", "bf16") in training
    evaluation = {row[0]: row for row in table_rows(section, 5)}
    assert set(evaluation) == {"off", "bf16", "fp16"}
    for amp in ("off", "bf16"):
        assert float(evaluation[amp][1]) > 0 and 0 < int(evaluation[amp][2]) <= 300
    assert re.search(r"lst / bare, amp off: \d+\.\d{3}\n", section)
    # the figure that docs/cluster.md asks to put in the workflow config: 1 / lst's images/s, amp off
    lst_off = next(row for key, row in training.items() if key[0].startswith("lst") and key[2] == "off")
    per_image = re.search(r"`gpu_jobs\.seconds_per_image\.(\w+)` = (\d+\.\d{3}) s per training image", section)
    assert per_image and abs(float(per_image[2]) - 1 / float(lst_off[3])) < 0.0015 + 0.01 / float(lst_off[3]) ** 2
    losses = {row[0]: row for row in table_rows(loss_table, 7) if row[0] != "loss"}
    assert set(losses) == {"cross_entropy", "eql", "eqlv2", "seesaw", "federated"}
    for row in losses.values():  # ms, time ratio, saved MiB, memory ratio, no GPU peak, share of the step
        assert float(row[1]) > 0 and float(row[3]) >= 0 and row[5] == "-" and row[6].endswith("%"), row
    assert losses["cross_entropy"][2] == losses["cross_entropy"][4] == "1.00"
    assert re.search(r"Whole check: \d+ s \(time guard 600 s\)", loss_table)


def test_a_missing_section_is_appended_and_nothing_else_changes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from gpu_check import replace_section

    results = tmp_path / "RESULTS.md"
    results.write_text(BEFORE + AFTER)
    replace_section(results, f"{HEADER}\n\nfigures 1\n")
    assert results.read_text() == BEFORE + AFTER + f"\n{HEADER}\n\nfigures 1\n"
    replace_section(results, f"{HEADER}\n\nfigures 2\n")  # the last section: replaced up to the end
    assert results.read_text() == BEFORE + AFTER + f"\n{HEADER}\n\nfigures 2\n"
    replace_section(tmp_path / "new.md", f"{HEADER}\n\nfigures\n")
    assert (tmp_path / "new.md").read_text() == f"{HEADER}\n\nfigures\n"


def test_ratios_divide_the_measured_rates(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from gpu_check import RUNS, Figures, ratios

    rates = {run: Figures(images_per_s=float(index + 1)) for index, run in enumerate(RUNS)}
    rates["fp16", "bare", "torchvision"] = Figures(note="fp16 needs a CUDA device")
    lines = ratios(rates)
    # RUNS: lst off, bf16, fp16 (1, 2, 3), bare off, bf16, fp16 (4, 5, -), bare loop on lst's model (7)
    assert lines == [
        "- lst / bare, amp off: 0.250",
        "- lst / bare, amp bf16: 0.400",
        "- lst / bare, amp fp16: -",
        "- lst's loop / the bare loop, both on lst's model, amp off: 0.143",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the full check would run")
def test_without_a_gpu_the_full_check_refuses_with_one_line():
    done = run_check()
    assert done.returncode == 2
    assert "no CUDA device here: the check needs a GPU (--smoke runs it on the CPU)" in done.stderr
