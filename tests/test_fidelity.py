"""docs/fidelity.md is true: every row's values are what the presets compose to.

Each table row with a config key names the released code's value and the value of each preset. The
test composes every preset with Hydra and checks each row; where the released value is a plain value
(in backticks), a paper preset must equal it unless the row says why it differs.
"""

import re
from pathlib import Path

import pytest
import yaml

import lst.conf

FIDELITY = Path(__file__).parents[1] / "docs" / "fidelity.md"
PRESETS = {"lvis_v0.5_lst": "lvis_v0.5_lst", "lvis_v1_lst": "lvis_v1_lst", "demo": "demo"}
PAPER = ("lvis_v0.5_lst", "lvis_v1_lst")
LITERAL = re.compile(r"^`([^`]*)`$")


def _rows() -> list[dict[str, str]]:
    keyed = FIDELITY.read_text().split("## Settings with a config key")[1].split("\n## ")[0]
    lines = [line.strip() for line in keyed.splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells == header or set("".join(cells)) <= set("-: "):
            continue
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


NOT_A_VALUE = object()  # a cell in words, not a `value`


def _literal(cell: str):
    match = LITERAL.match(cell)
    return yaml.safe_load(match.group(1)) if match else NOT_A_VALUE


@pytest.fixture(scope="module")
def composed() -> dict[str, dict]:
    return {name: lst.conf.compose([f"preset={preset}"]) for name, preset in PRESETS.items()}


def _lookup(config: dict, key: str):
    """A dotted key's value; None for a key a preset leaves out (e.g. a model override it does not make)."""
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def test_the_table_covers_the_settings_of_the_method():
    keys = {_literal(row["key"]) for row in _rows()}
    for key in (
        "train_phase.iterations",
        "distill.group_images",
        "replay.variant",
        "model.regression_relu",
        "train_base.bias_lr_factor",
        "train_phase.warmup_iters",
        "model.target_fallback_positives",
    ):
        assert key in keys, f"docs/fidelity.md has no row for {key}"  # fmt: skip


def test_every_row_holds_in_the_composed_presets(composed):
    checked = 0
    for row in _rows():
        key = _literal(row["key"])
        if key is NOT_A_VALUE:
            continue  # a difference without a config key: described, not composed
        for column in PRESETS:
            expected = _literal(row[column])
            assert expected is not NOT_A_VALUE, f"docs/fidelity.md row {key}: column {column} is not a `value`"
            assert _lookup(composed[column], key) == expected, f"{column}: {key}"
            checked += 1
        released = _literal(row["released"])
        if released is not NOT_A_VALUE and not row["why they differ"]:
            for column in PAPER:
                assert _literal(row[column]) == released, f"{column}: {key} differs from the released value"
    assert checked >= 3 * 40
