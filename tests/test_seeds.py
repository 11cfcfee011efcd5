"""Seeds in the DAG, on a tiny config of two seeds (finetune and lst, one phase): every seeded step runs per
seed under results/demo/seed<s>/, the summary carries mean ± std and a paired difference that its per-seed rows
recompute, and a further seed trains only its own models."""

import re

import numpy as np
import pytest
import torch
import yaml
from workflow_copy import configure, run_snakemake, workflow_copy

from lst.data import tables

CONFIG = {"preset": "tiny", "methods": ["finetune", "lst"], "phases": {"sizes": [12, 6]}, "seeds": [0, 1]}
T_975_1 = 12.706  # Student's t, 97.5% quantile, 1 degree of freedom (a printed table's)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    root = workflow_copy(tmp_path_factory.mktemp("seeds"), **CONFIG)
    run_snakemake(root)
    return root


def test_each_seed_trains_its_own_models_from_the_shared_data(two_seeds):
    results = two_seeds / "results" / "demo"
    assert sorted(p.name for p in results.iterdir() if p.name.startswith("seed")) == ["seed0", "seed1"]
    models = {}
    for seed in (0, 1):
        for name in ("base/phase0", "finetune/phase1", "lst/phase1"):
            checkpoint = torch.load(results / f"seed{seed}/{name}/model.pt", weights_only=True)
            assert checkpoint["config"]["seed"] == seed, name
            models[seed, name] = checkpoint["model"]
    for name in ("base/phase0", "lst/phase1"):  # another seed draws other initial weights and samples
        assert not all(torch.equal(v, models[1, name][k]) for k, v in models[0, name].items()), name
    assert (results / "data/images.parquet").is_file() and not list(results.glob("seed*/data"))


def test_the_summary_shows_mean_std_and_a_paired_difference_recomputed_from_its_rows(two_seeds):
    results = two_seeds / "results" / "demo"
    summary = tables.read_table(results / "summary.parquet", tables.SUMMARY)
    assert set(summary["seed"]) == {0, 1}
    assert (summary.groupby(["method", "phase", "iou_type", "metric"]).size() == 2).all()
    text = (results / "summary.md").read_text()
    assert "2 seeds (0, 1): mean ± sample standard deviation (n - 1) over them." in text

    def values(method, metric="AP"):
        rows = summary[(summary["method"] == method) & (summary["iou_type"] == "segm") & (summary["metric"] == metric)]
        return rows.sort_values("seed")["value"].to_numpy()

    for method in ("finetune", "lst"):  # the first table: base model (phase 0), phase 1
        base, ours = values("base"), values(method)
        cells = [f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f} (n=2)" for v in (base, ours)]
        assert f"| {method} | {cells[0]} | {cells[1]} |" in text
    # lst against the reference, finetune (the first incremental method): mean difference +- t * sd / sqrt(2)
    paired = text.split("## Paired differences from finetune")[1]
    row = next(line for line in paired.splitlines() if line.startswith("| lst |"))
    difference = values("lst") - values("finetune")
    mean, half = difference.mean(), T_975_1 * difference.std(ddof=1) / np.sqrt(2)
    cell = f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"
    assert row.split(" | ")[1].startswith(cell), (row, cell)
    assert ("not distinguishable on 2 seeds" in row.split(" | ")[1]) == (mean - half <= 0 <= mean + half)


def test_a_further_seed_trains_only_its_own_models(two_seeds):
    original = (two_seeds / "test.yaml").read_text()
    try:
        (two_seeds / "test.yaml").write_text(yaml.safe_dump(yaml.safe_load(original) | {"seeds": [0, 1, 2]}))
        dry = run_snakemake(two_seeds, "-n").stdout
    finally:
        (two_seeds / "test.yaml").write_text(original)
    blocks = [b.strip() for b in re.split(r"\n\[\w{3} \w{3} .+\]\n", dry)[1:]]  # each job's lines follow its date
    jobs = [(re.match(r"(?:local)?rule (\w+):", b)[1], re.search(r"wildcards: .*\bseed=(\d+)", b)) for b in blocks]
    unseeded = {rule for rule, seed in jobs if seed is None}
    assert unseeded == {"report", "gallery", "all"}, unseeded  # the tables and plots of every seed
    assert {seed[1] for _, seed in jobs if seed} == {"2"}
    assert {"train_base", "train_phase", "build_replay", "evaluate"} <= {rule for rule, seed in jobs if seed}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seeds": [0, 0]}, "lst: config seeds: [0, 0] repeats a seed; give each seed once"),
        ({"seeds": [-1]}, "Failed validating 'oneOf' in schema['properties']['seeds']['items']"),
        ({"seeds": ["0", 0]}, "lst: config seeds: [0, 0] repeats a seed"),  # --config gives strings
        ({"seed": 3}, "lst: config seed: 3: seeds is a list now; write seeds: [3]"),
    ],
)
def test_bad_seeds_are_refused_before_any_job(tmp_path, change, message):
    root = workflow_copy(tmp_path)
    result = run_snakemake(configure(root, **change), "-n", check=False)
    output = result.stdout + result.stderr  # the schema's message goes to stdout, lst's line to stderr
    assert result.returncode == 1 and message in output, output[-2000:]
    assert not (root / "results").exists()
