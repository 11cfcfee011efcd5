"""The typed config (lst.conf.schema): bad keys and values fail at composition in one line naming the key;
settings are stated once (train/shared.yaml for both training phases, lvis_v1_lst on top of lvis_v0.5_lst)."""

import dataclasses
import shutil
from enum import Enum

import pytest
import yaml

import lst.conf
from lst.conf import schema
from lst.errors import ConfigError, InputError


def _refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        lst.conf.compose(overrides)
    message = str(error.value)
    assert "\n" not in message
    return message


def _choice_keys(node: type = schema.LstConfig, prefix: str = "") -> dict[str, type[Enum]]:
    """Every key of the schema whose value is a choice, with its Enum."""
    keys = {}
    for field in dataclasses.fields(node):
        if dataclasses.is_dataclass(field.type):
            keys |= _choice_keys(field.type, f"{prefix}{field.name}.")
        elif isinstance(field.type, type) and issubclass(field.type, Enum):
            keys[prefix + field.name] = field.type
    return keys


def test_every_choice_is_checked_at_composition():
    keys = _choice_keys()
    assert {"train_base.optimizer", "train_phase.amp", "eval.amp", "replay.variant", "replay.quota_rounding",
            "replay.remainder", "train_base.joint_budget", "train_base.schedule",
            "model.backbone"} <= set(keys)  # fmt: skip
    for key, enum in keys.items():
        allowed = ", ".join(member.name for member in enum)
        assert _refused(f"{key}=bogus") == f"{key}: 'bogus' is not one of {allowed} (override {key}=bogus)"
    assert _refused("replay.variant=rand_balanced").startswith(
        "replay.variant: 'rand_balanced' is not one of cycle, with_replacement, without_replacement, fixed_draw"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("train_phase.itrations=5", "train_phase.itrations: not a key of train_phase (did you mean iterations?)"),
        ("phases.bse=3", "phases.bse: not a key of phases (did you mean base?)"),
        ("evl.max_dets=3", "evl: not a key of the config (did you mean eval?)"),
        ("train_base.iterations=many", "train_base.iterations: Value 'many' of type 'str' could not be converted"),
        ("phases.sizes=[2,x]", "phases.sizes[1]: Value 'x' of type 'str' could not be converted to Integer"),
        ("preset=lvis_v2", "config: In 'lst': Could not find 'preset/lvis_v2'"),
        ("+train_phase.model_overrides.box_batch_size_per_imag=3",
         "train_phase.model_overrides.box_batch_size_per_imag: not a key of model (did you mean box_batch_size_per"),
        ("+train_phase.model_overrides.min_size=big",
         "train_phase.model_overrides.min_size: Value 'big' of type 'str' could not be converted to Integer"),
    ],
)  # fmt: skip
def test_a_bad_override_is_one_line_naming_the_key(override, message):
    assert message in _refused(override)


@pytest.fixture
def conf_copy(tmp_path, monkeypatch):
    """A copy of the config tree that a test may break."""
    shutil.copytree(lst.conf.CONF_DIR, tmp_path / "conf")
    monkeypatch.setattr(lst.conf, "CONF_DIR", tmp_path / "conf")
    return tmp_path / "conf"


@pytest.mark.parametrize(
    "file, change, message",
    [
        ("preset/tiny.yaml", ("  iterations: 12", "  itrations: 12"),
         "train_base.itrations: not a key of train_base (did you mean iterations?) (preset/tiny.yaml)"),
        ("preset/lvis_v0.5_lst.yaml", ("variant: cycle ", "variant: cycl "),
         "replay.variant: 'cycl' is not one of cycle, with_replacement, without_replacement, fixed_draw "
         "(preset/lvis_v0.5_lst.yaml)"),
        ("train/shared.yaml", ("optimizer: adamw", "optimiser: adamw"), "train_base.optimiser: not a key of"),
        ("model/small.yaml", ("min_size: 128", "min_size: 12.8"), "model.min_size: Value '12.8' of type 'float'"),
    ],
)  # fmt: skip
def test_a_typo_in_a_yaml_file_names_the_key_and_the_file(conf_copy, file, change, message):
    path = conf_copy / file
    assert change[0] in path.read_text()
    path.write_text(path.read_text().replace(*change))
    preset = file.split("/")[1].removesuffix(".yaml") if file.startswith("preset/") else "demo"
    assert message in _refused(f"preset={preset}")


def test_a_composition_error_is_an_input_error():
    """The steps end with one line and exit 1 on an InputError (lst.steps.step)."""
    assert issubclass(ConfigError, InputError)


def test_both_training_phases_start_from_the_shared_keys():
    """lst.yaml: train_base and train_phase are train/shared.yaml plus what differs, the values of before."""
    shared = yaml.safe_load((lst.conf.CONF_DIR / "train" / "shared.yaml").read_text())
    cfg = lst.conf.compose(["~preset"])  # lst.yaml's own values
    assert cfg["train_base"] == {**shared, "iterations": 600, "lr": 0.003, "warmup_iters": 50,
                                 "freeze_backbone_stages": 0, "joint_budget": "equal_images"}  # fmt: skip
    assert cfg["train_phase"] == {**shared, "iterations": 200, "lr": 0.001, "warmup_iters": 20,
                                  "freeze_backbone_stages": 5, "model_overrides": {}}  # fmt: skip
    assert shared == {
        "batch_size": 8, "optimizer": "adamw", "momentum": 0.9, "weight_decay": 0.0001, "bias_lr_factor": 2.0,
        "weight_decay_bias": 0.0, "schedule": "cosine", "steps": [], "gamma": 0.1, "warmup_factor": 0.001,
        "flip_prob": 0.5, "checkpoint_period": 100, "log_period": 20, "eval_period": 0, "num_workers": 0,
        "amp": "off", "channels_last": False, "aspect_grouping": True,
    }  # fmt: skip
    # setting one phase's key leaves the other's alone
    changed = lst.conf.compose(["train_base.batch_size=2"])
    assert (changed["train_base"]["batch_size"], changed["train_phase"]["batch_size"]) == (2, 8)


def test_lvis_v1_is_lvis_v05_but_the_base_schedule():
    text = yaml.safe_load((lst.conf.CONF_DIR / "preset" / "lvis_v1_lst.yaml").read_text())
    assert text == {"defaults": ["lvis_v0.5_lst", "_self_"],
                    "train_base": {"iterations": 87_500, "steps": [52_500, 70_000]}}  # fmt: skip
    v05, v1 = lst.conf.compose(["preset=lvis_v0.5_lst"]), lst.conf.compose(["preset=lvis_v1_lst"])
    assert v1 == {**v05, "train_base": {**v05["train_base"], "iterations": 87_500, "steps": [52_500, 70_000]}}
    assert v1["model"]["backbone"] == "resnet50_fpn" and v1["train_phase"]["iterations"] == 40_000
