"""The data side never imports torch (about 3 s and 600 MB per process): its modules, and its steps as the
Snakemake rules run them (``python -m lst.steps.<step>``), each in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import step_command

from lst.data import tables
from lst.testing import write_lvis

REPO = Path(__file__).resolve().parents[1]

# the data package (ingestion, tables, phase plan, sampling, checks, synthetic and demo data), the errors, the
# evaluator, phase metrics, the report, lst-eval, the method families (the workflow imports them), the data steps
DATA_MODULES = [
    "lst.errors", "lst.io", "lst.data", "lst.data.lvis_json", "lst.data.tables", "lst.data.phase_plan",
    "lst.data.sampling", "lst.data.checks", "lst.data.synthetic_lvis", "lst.data.demo", "lst.testing",
    "lst.evaluation", "lst.evaluation.lvis_eval", "lst.evaluation.phase_metrics", "lst.reporting",
    "lst.reporting.report", "lst.reporting.summary_page", "lst.data.segmentation",
    "lst.conf.schema", "lst.conf.typed", "lst.cli.lst_eval", "lst.steps",
    "lst.methods", "lst.methods.finetune", "lst.methods.replay", "lst.methods.distill", "lst.methods.lst",
    "lst.methods.joint", "lst.engine.cluster", "lst.engine.budget",
    "lst.steps.prepare_data", "lst.steps.check_data", "lst.steps.split", "lst.steps.build_replay",
    "lst.steps.make_demo",
]  # fmt: skip


def _without_torch(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which ``import torch`` fails, naming the importer in its traceback."""
    poison = tmp_path / "no_torch" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text('raise ImportError("torch imported by a data module or step")\n')
    path = [str(poison.parent), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def test_data_modules_import_without_torch():
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module({name!r})\n" for name in DATA_MODULES)
    code += "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'torch'))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_data_steps_run_without_torch(dataset, tmp_path):
    """prepare_data, check_data, split and build_replay on the tiny dataset, with torch made unimportable."""
    env = _without_torch(tmp_path)
    out = tmp_path / "results"
    data = [f"paths.data_dir={out / 'data'}", f"paths.split_dir={out / 'split'}"]
    short = ["train_phase.iterations=4", "train_phase.batch_size=1"]  # the stream of 4 samples
    steps = {
        "prepare_data": [f"dataset.train_json={dataset['train_json']}", f"dataset.val_json={dataset['val_json']}"],
        "check_data": [f"dataset.image_root={dataset['image_root']}", f"paths.report={out / 'data' / 'check.md'}"],
        "split": ["phases.sizes=[2,1]"],
        "build_replay": [f"paths.replay={out / 'replay.parquet'}", "phase=1", "method=lst"],
    }
    for name, overrides in steps.items():
        command = step_command(name, *data, *short, *overrides, f"hydra.run.dir={tmp_path / 'hydra' / name}")
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "images checked: 3" in (out / "data" / "check.md").read_text()
    assert len(tables.read_table(out / "replay.parquet", tables.REPLAY)) == 4


@pytest.mark.parametrize("step", ["prepare_data", "split"])
def test_data_steps_refuse_bad_input_without_torch(dataset, tmp_path, step):
    """Refusing an input takes no torch either: the steps catch lst.errors.InputError, which is torch-free."""
    out = tmp_path / "results"
    if step == "prepare_data":
        bad = write_lvis(tmp_path / "train.json", {"images": [], "annotations": []})
        overrides = [f"dataset.train_json={bad}", f"dataset.val_json={dataset['val_json']}"]
        message = f"{bad}: not an LVIS-format file"
    else:
        overrides = [f"paths.data_dir={dataset['data_dir']}", "phases.sizes=[2,2]"]
        message = "phases.sizes need 4 classes ([2, 2]) but the dataset has 3"
    command = step_command(step, f"paths.data_dir={out}", f"paths.split_dir={out}", *overrides, f"hydra.run.dir={out}")
    result = subprocess.run(command, capture_output=True, text=True, env=_without_torch(tmp_path))
    assert result.returncode == 1
    assert message in result.stdout + result.stderr
    assert "Error executing job" not in result.stdout + result.stderr  # Hydra's report of an uncaught exception
    assert not out.exists() or not any(out.rglob("*.*"))


def test_torch_is_refused_where_torch_is_made_unimportable(tmp_path):
    """The check above can fail: a step that imports torch does not run in that environment."""
    result = subprocess.run(
        [sys.executable, "-c", "import lst.data.phase_data"],
        capture_output=True,
        text=True,
        env=_without_torch(tmp_path),
    )
    assert result.returncode != 0
    assert "torch imported by a data module or step" in result.stderr
