"""Hydra config tree of lst (a package so Hydra finds it when a step is imported, not only run).

``methods()`` lists the methods: one file each in ``method/``, read by the workflow (DAG and config check),
the plots and, through Hydra's ``method=<name>`` group choice, the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

METHOD_DIR = Path(__file__).parent / "method"
BASE = "base"  # method/base.yaml: the shared phase-0 model, the steps' default; not a method to run
KINDS = ("incremental", "joint")


def methods() -> dict[str, dict[str, Any]]:
    """Each method file's ``method`` block by name: the base model first, then the methods by name.

    Every file declares the keys of ``base.yaml``, its ``name`` is its file name and its ``kind`` is one
    of ``KINDS``; a file that breaks this raises ``ValueError`` naming it.
    """
    found = {path.stem: _method_block(path) for path in sorted(METHOD_DIR.glob("*.yaml"))}
    if BASE not in found:
        raise ValueError(f"{METHOD_DIR / 'base.yaml'}: missing (the steps' default method)")
    keys = set(found[BASE])
    for name, block in found.items():
        path = METHOD_DIR / f"{name}.yaml"
        if set(block) != keys:
            missing, extra = sorted(keys - set(block)), sorted(set(block) - keys)
            raise ValueError(f"{path}: method keys differ from base.yaml's (missing {missing}, unknown {extra})")
        if block["name"] != name:
            raise ValueError(f"{path}: method.name is {block['name']!r}, not its file name {name!r}")
        if name != BASE and block["kind"] not in KINDS:
            raise ValueError(f"{path}: method.kind is {block['kind']!r}, not one of {KINDS}")
    return {BASE: found.pop(BASE), **found}


def _method_block(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data.get("method"), dict):
        raise ValueError(f"{path}: no `method:` block (a method file starts with `# @package _global_`)")
    return data["method"]
