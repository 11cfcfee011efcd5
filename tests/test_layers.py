"""The packages' layering (docs/architecture.md): a package imports only lower layers, never a higher one.

Every module under src/lst is read with ``ast`` (imports inside functions included) and each import of an
lst module is checked against ``LAYERS``. Packages of the same layer (methods, evaluation) do not import each
other. That importing the data package and running the data steps loads no torch is test_torch_free.py's.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lst's top-level modules and packages by layer, lowest first
LAYERS = {
    "errors": 0,
    "io": 1, "conf": 1, "testing": 1,
    "data": 2, "losses": 2,
    "modeling": 3,
    "engine": 4,
    "methods": 5, "evaluation": 5,
    "reporting": 6,
    "steps": 7, "cli": 7,
}  # fmt: skip


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted lst name) of every import of lst in a module: ``from lst import x`` gives ``lst.x``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "lst":
                found += [(node.lineno, f"lst.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "lst"]


def layer_violations(root: Path) -> list[str]:
    """One line per import of a higher layer, or of another package of the same layer, under ``root``/lst."""
    problems = []
    for path in sorted((root / "lst").rglob("*.py")):
        parts = path.relative_to(root / "lst").with_suffix("").parts
        if parts == ("__init__",):
            continue
        own = parts[0]
        if own not in LAYERS:
            problems.append(f"{path}: lst.{own} is in no layer of LAYERS")
            continue
        for line, name in _imported(ast.parse(path.read_text(), str(path))):
            target = name.split(".")[1] if "." in name else ""
            if target == own:
                continue
            if target not in LAYERS:
                problems.append(f"{path}:{line}: imports {name}, in no layer of LAYERS")
            elif LAYERS[target] >= LAYERS[own]:
                layers = f"lst.{own} (layer {LAYERS[own]}) imports {name} (layer {LAYERS[target]})"
                problems.append(f"{path}:{line}: {layers}")
    return problems


def test_no_package_imports_a_higher_layer():
    assert layer_violations(SRC) == []


def test_every_module_is_in_a_layer_and_no_flat_module_remains():
    """src/lst holds the packages of LAYERS and the top-level modules errors, io, testing; nothing else (no
    module left under an old flat name)."""
    entries = {p.stem for p in (SRC / "lst").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert entries == set(LAYERS) | {"__init__"}


def test_library_package_inits_import_nothing():
    """A library package's ``__init__`` re-exports nothing: importing lst.data loads only lst.data (torch-free).
    (lst.steps' ``__init__`` is the steps' shared runner; lst.conf's lists the method files; lst.methods' is the
    methods' API, Method and load_method, from its torch-free modules, and lst.losses' torch-free
    classification_loss: test_torch_free.py imports it.)"""
    for package in ("data", "modeling", "engine", "evaluation", "reporting", "cli"):
        init = SRC / "lst" / package / "__init__.py"
        assert _imported(ast.parse(init.read_text())) == [], init
    methods_init = SRC / "lst" / "methods" / "__init__.py"
    assert {name for _, name in _imported(ast.parse(methods_init.read_text()))} == {
        "lst.losses",
        "lst.methods.method",
        "lst.methods.registry",
    }


def test_the_check_finds_a_wrong_way_import(tmp_path):
    """The scan above can fail: a data module importing the model, or a method importing the evaluation."""
    lst = tmp_path / "lst"
    for package, source in {
        "data": "import numpy\nfrom lst.errors import DataError\n",
        "modeling": "def f():\n    from lst.data import tables\n",
        "methods": "from lst import evaluation\n",
        "evaluation": "import lst.engine.distributed\n",
    }.items():
        (lst / package).mkdir(parents=True)
        (lst / package / "__init__.py").write_text("")
        (lst / package / "module.py").write_text(source)
    (lst / "data" / "late.py").write_text("def g():\n    from lst.modeling.mask_rcnn import build_model\n")
    problems = layer_violations(tmp_path)
    assert len(problems) == 2
    assert "data/late.py:2: lst.data (layer 2) imports lst.modeling.mask_rcnn (layer 3)" in problems[0]
    assert "methods/module.py:1: lst.methods (layer 5) imports lst.evaluation (layer 5)" in problems[1]
