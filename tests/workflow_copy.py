"""Run the repository's workflow in a scratch folder, as a user would, with a config of the test's own."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def workflow_copy(root: Path, **config) -> Path:
    """The workflow files and src/ in ``root``, and test.yaml: the default config updated by ``config``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles", "envs", "src"):  # a checkout: the jobs run its src/
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, root / name)
    return configure(root, **config)


def configure(root: Path, **config) -> Path:
    """``root``'s test.yaml: the default config updated by ``config``."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    default.update(config)
    (root / "test.yaml").write_text(yaml.safe_dump(default))
    return root


def snakemake_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", "test.yaml"]


def run_snakemake(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(snakemake_command(*args), cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def paper_workflow(root: Path, dataset: str, num_categories: int, **config) -> Path:
    """A copy configured by config/<dataset>.yaml (updated by ``config``) for a dry run: json files of
    ``num_categories`` categories and no images, an empty weights file and image folder where it points."""
    categories = [{"id": i, "name": f"c{i}", "frequency": "r"} for i in range(1, num_categories + 1)]
    for name in ("train", "val"):
        path = root / "data" / "lvis" / f"{dataset}_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    (root / "data" / "weights").mkdir()
    (root / "data" / "weights" / "e2e_mask_rcnn_R_50_FPN_1x.pth").write_bytes(b"")  # a dry run needs it to exist
    (root / "data" / "coco").mkdir()
    paper = yaml.safe_load((REPO / "config" / f"{dataset}.yaml").read_text())
    return workflow_copy(root, **(paper | config))
