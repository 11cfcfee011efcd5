"""The paper presets' training budgets as the released code sets them, and the joint baselines' derived budget."""

from pathlib import Path

import pandas as pd
import pytest

import lst.conf
from lst.data import tables


def composed(preset: str, *overrides: str) -> dict:
    return lst.conf.compose([f"preset={preset}", *overrides])


@pytest.mark.parametrize("preset", ["lvis_v0.5_lst", "lvis_v1_lst"])
def test_paper_phases_replay_as_released(preset):
    cfg = composed(preset)
    phase = cfg["train_phase"]
    # the released replay indices: 80,000 samples per GPU on 8 GPUs, read 2 per GPU per iteration
    samples = phase["iterations"] * phase["batch_size"] * cfg["replay"]["world_size"]
    assert samples == 80_000 * 8 == 640_000
    assert phase["iterations"] == 80_000 // 2
    assert cfg["replay"] | {"world_size": 1} == {
        "variant": "cycle",
        "quota_rounding": "half_even",
        "remainder": "last_epoch_unshuffled",
        "world_size": 1,
    }
    assert cfg["train_base"]["aspect_grouping"] and not phase["aspect_grouping"]
    assert cfg["train_base"]["joint_budget"] == "equal_images"


def test_base_phase_length_of_lvis_v05():
    assert composed("lvis_v0.5_lst")["train_base"]["iterations"] == 50_000


def test_defaults_are_the_released_replay():
    cfg = composed("demo")
    assert (cfg["replay"]["variant"], cfg["replay"]["quota_rounding"]) == ("cycle", "half_even")
    assert cfg["train_base"]["joint_budget"] == "equal_images"


def test_equal_images_budget_by_hand():
    from lst.engine.budget import equal_images_budget

    base = {"iterations": 50_000, "batch_size": 8, "steps": [30_000, 40_000], "lr": 0.01}
    phase = {"iterations": 40_000, "batch_size": 16}
    # 50,000 x 8 + 6 x 40,000 x 16 = 4,240,000 images = 530,000 iterations of 8; steps at 60% and 80%
    assert equal_images_budget(base, phase, 6) == {**base, "iterations": 530_000, "steps": [318_000, 424_000]}
    # the demo: 450 x 8 + 2 x 120 x 8 = 5,520 images = 690 iterations of 8
    demo_base = {"iterations": 450, "batch_size": 8, "steps": []}
    assert equal_images_budget(demo_base, {"iterations": 120, "batch_size": 8}, 2)["iterations"] == 690
    # 10 x 8 + 5 x 3 = 95 images need 12 iterations of 8 (rounded up); the step at 5 of 10 moves to 6 of 12
    short = {"iterations": 10, "batch_size": 8, "steps": [5]}
    assert equal_images_budget(short, {"iterations": 5, "batch_size": 3}, 1) == {
        **short,
        "iterations": 12,
        "steps": [6],
    }


def _split_dir(tmp_path: Path, phases: list[int]) -> Path:
    split = pd.DataFrame(
        {
            "category_id": range(1, len(phases) + 1),
            "name": [f"c{i}" for i in range(len(phases))],
            "frequency": "r",
            "instance_count": 1,
            "image_count": 1,
            "rank": range(1, len(phases) + 1),
            "phase": phases,
        }
    )
    tables.write_table(split, tmp_path / "categories.parquet", tables.PHASE_PLAN)
    return tmp_path


def test_joint_budget_reads_the_number_of_phases_from_the_split(tmp_path):
    from lst.errors import ConfigError
    from lst.steps.train_base import training_config

    split_dir = _split_dir(tmp_path, [0, 0, 1, 2, 3, 3, -1])  # 3 incremental phases; -1: never learned
    cfg = composed("tiny", "phase=3")
    base, phase = cfg["train_base"], cfg["train_phase"]
    derived = training_config(cfg, str(split_dir))
    images = base["iterations"] * base["batch_size"] + 3 * phase["iterations"] * phase["batch_size"]
    assert derived["iterations"] == -(-images // base["batch_size"]) > base["iterations"]
    assert training_config(composed("tiny", "phase=0"), str(split_dir)) == base  # the base model itself
    assert training_config(composed("tiny", "phase=3", "train_base.joint_budget=base"), str(split_dir)) == {
        **base,
        "joint_budget": "base",
    }
    with pytest.raises(ConfigError, match="train_base.joint_budget: 'double' is not one of equal_images, base"):
        composed("tiny", "phase=3", "train_base.joint_budget=double")
