"""Every snakemake command that README.md and docs/ show runs as written: each is dry-run (the DAG is built and
checked, nothing is trained) in a copy of the workflow, and a report command runs on the tests' finished tiny
run. Files the docs ask the user to write (a block that names its ``# <path>``; docs/extending.md's method of
your own in my_methods/) are written first; dataset files that a config names and the copy lacks get empty
stand-ins, since a dry run reads none of them."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docs_blocks import DOCS, fenced_blocks, files_to_write, own_method_files, shell_commands
from workflow_copy import REPO, workflow_copy

OWN_METHOD_DIR = "my_methods"  # where docs/extending.md's command finds its method of your own

SHARED = REPO.parent / "shared"
INLINE = re.compile(r"`((?:\.venv/bin/)?snakemake [^`]+)`")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every snakemake command in a bash block or inline code of the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        name = doc.relative_to(REPO)
        for _, block in fenced_blocks(text, "bash"):
            found += [(f"{name}: {command}", command) for command in shell_commands(block)]
        found += [(f"{name}: {command}", command) for command in INLINE.findall(text)]
    return found


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the workflow beside a link to ../shared (where the real-photo configs find their data)."""
    base = tmp_path_factory.mktemp("docs")
    if SHARED.is_dir():
        (base / "shared").symlink_to(SHARED)
    root = workflow_copy(base / "repo")
    own = {f"{OWN_METHOD_DIR}/{path}": text for path, text in own_method_files().items()}
    for path, text in (files_to_write() | own).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def stand_in_inputs(root: Path, configfiles: list[str]) -> None:
    """Stand-ins for the dataset and weight paths of ``configfiles`` that the copy lacks (never under ../): json
    files of as many categories as the phases need and nothing else, image folders, empty weight files."""
    for configfile in configfiles:
        config = yaml.safe_load((root / configfile).read_text()) or {}
        dataset, phases = config.get("dataset", {}), config.get("phases", {})
        num_categories = sum(phases.get("sizes") or [phases.get("base", 1), phases.get("step", 0) *
                                                     phases.get("num_incremental", 1)])  # fmt: skip
        categories = [{"id": i, "name": f"c{i}"} for i in range(1, num_categories + 1)]
        files = {dataset.get(key): json.dumps({"images": [], "annotations": [], "categories": categories})
                 for key in ("train_json", "val_json")}  # fmt: skip
        files |= {config.get(key): "" for key in ("weights", "backbone_weights")}
        for path, text in files.items():
            if path and not path.startswith("..") and not (root / path).exists():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
        image_root = dataset.get("image_root", {})
        for folder in [image_root] if isinstance(image_root, str) else image_root.values():
            if not folder.startswith(".."):
                (root / folder).mkdir(parents=True, exist_ok=True)


def configfiles_of(words: list[str]) -> list[str]:
    if "--configfile" not in words:
        return []
    after = words[words.index("--configfile") + 1 :]
    return [word for word in after[: next((i for i, w in enumerate(after) if w.startswith("-")), len(after))]]


@pytest.mark.parametrize("command", [c for _, c in documented_commands()], ids=[w for w, _ in documented_commands()])
def test_documented_command_runs(command: str, checkout: Path, request: pytest.FixtureRequest):
    """Dry-run as written; a report command, which needs finished results, runs for real on the tiny run."""
    words = shlex.split(command)
    if any(word.startswith("../shared/") for word in words) or "coco_mini" in command:
        if not SHARED.is_dir():
            pytest.skip(f"needs the real photographs of {SHARED} (absent here)")
    if "--report" in words:
        checkout, _ = request.getfixturevalue("tiny_run")
        words, dry = words + ["--configfile", "test.yaml"], []
    else:
        stand_in_inputs(checkout, configfiles_of(words))
        dry = [] if {"-n", "--dry-run", "--lint"} & set(words) else ["--dry-run"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *words[1:], *dry], cwd=checkout, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_the_docs_show_commands():
    """The extraction finds the commands a user copies (so the test above cannot pass by finding none)."""
    commands = [command for _, command in documented_commands()]
    assert ".venv/bin/snakemake --cores 2" in commands  # README's first command
    assert any("--profile profiles/slurm" in command for command in commands)
    assert "my.yaml" in files_to_write()
    assert set(own_method_files()) == {"focal.py", "lst_focal.yaml"}
