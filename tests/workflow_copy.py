"""Run the repository's workflow in a scratch folder, as a user would, with a config of the test's own."""

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
