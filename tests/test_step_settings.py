"""What a step may read (lst.steps.settings.READS, enforced by lst.steps.step) and what a method file must say."""

import importlib
import shutil
import sys
from pathlib import Path

import pytest

import lst.conf
from lst.errors import ConfigError
from lst.methods import META, TEACHER_LOGITS, Kind, load_method
from lst.steps import settings

STEPS = Path(settings.__file__).parent


def test_every_step_declares_its_settings():
    modules = {path.stem for path in STEPS.glob("*.py")} - {"__init__", "settings"}
    assert set(settings.READS) == modules


def test_a_step_sees_only_the_settings_it_declares(monkeypatch, capfd, tmp_path):
    """make_demo reads `demo`: without it declared, the step stops at the read, before writing anything."""
    main = importlib.import_module("lst.steps.make_demo").main
    monkeypatch.setitem(settings.READS, "make_demo", ())
    monkeypatch.setattr(sys, "argv", ["make_demo", f"paths.out_dir={tmp_path / 'demo'}", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit):
        main()
    assert "'demo' is not among the settings lst.steps.settings.READS declares" in "".join(capfd.readouterr())
    assert not (tmp_path / "demo").exists() and list(tmp_path.iterdir()) == []  # nor any file of Hydra's


def test_select_takes_dotted_keys_whole():
    config = {"dataset": {"name": "demo", "image_root": "x"}, "eval": {"batch_size": 2, "amp": "off"}, "seed": 0}
    assert settings.select(config, ("dataset.image_root", "eval")) == {
        "dataset": {"image_root": "x"},
        "eval": {"batch_size": 2, "amp": "off"},
    }
    assert settings.covers(("eval", "dataset.image_root"), "eval.batch_size")
    assert not settings.covers(("eval", "dataset.image_root"), "dataset.name")
    assert not settings.covers(("eval",), "evaluate")


@pytest.fixture
def method_dir(tmp_path, monkeypatch):
    shutil.copytree(lst.conf.METHOD_DIR, tmp_path / "method")
    monkeypatch.setattr(lst.conf, "METHOD_DIR", tmp_path / "method")
    return tmp_path / "method"


def test_the_methods_are_the_files_and_their_families_say_what_they_are(method_dir):
    blocks = lst.conf.methods()
    assert list(blocks)[0] == "base"
    methods = {name: load_method(block) for name, block in blocks.items()}
    assert {name for name, m in methods.items() if m.kind is Kind.incremental} == {
        "finetune", "replay", "distill", "lst", "lst_meta", "lst_eqlv2", "lst_seesaw"
    }  # fmt: skip
    assert {name for name, m in methods.items() if m.kind is Kind.joint} == {
        "base", "base_eqlv2", "base_seesaw", "joint", "joint_rfs", "joint_eql", "joint_eqlv2", "joint_seesaw",
        "joint_seesaw_rfs", "joint_seesaw_cos20", "joint_federated"
    }  # fmt: skip
    assert {name for name, m in methods.items() if TEACHER_LOGITS in m.phase_inputs()} == {
        "distill", "lst", "lst_meta", "lst_eqlv2", "lst_seesaw"
    }  # fmt: skip
    assert [name for name, m in methods.items() if META in m.phase_inputs()] == ["lst_meta"]
    assert {name for name, m in methods.items() if getattr(m.settings, "repeat_factor_sampling", False)} == {
        "joint_rfs", "joint_seesaw_rfs"
    }  # fmt: skip
    # the loss is a setting of any family; an incremental method with a loss of its own has a base trained with it
    losses = {name: m.loss.name for name, m in methods.items() if m.loss.name != "cross_entropy"}
    assert losses == {
        "base_eqlv2": "eqlv2", "base_seesaw": "seesaw", "joint_eql": "eql", "joint_eqlv2": "eqlv2",
        "joint_seesaw": "seesaw", "joint_seesaw_rfs": "seesaw", "joint_seesaw_cos20": "seesaw",
        "joint_federated": "federated", "lst_eqlv2": "eqlv2", "lst_seesaw": "seesaw",
    }  # fmt: skip
    bases = {name: m.base for name, m in methods.items() if m.kind is Kind.incremental}
    assert all(methods[bases[name]].loss == methods[name].loss for name in bases)
    assert {name for name, m in methods.items() if m.extra_logits()} == {
        n for n, loss in losses.items() if loss == "seesaw"
    }
    # a variant is a file of settings: lst_meta is lst with meta
    assert type(methods["lst_meta"]) is type(methods["lst"]) and methods["lst_meta"].settings.meta
    text = (method_dir / "lst.yaml").read_text()
    (method_dir / "mine.yaml").write_text(text.replace("name: lst", "name: mine"))
    assert lst.conf.methods()["mine"] == {**blocks["lst"], "name": "mine"}


@pytest.mark.parametrize(
    "change, message",
    [
        (("name: lst2", "name: lst"), "method.name is 'lst', not its file name 'lst2'"),
        (
            ("  family: lst\n", ""),
            "the keys name, family, settings, optionally loss, base (missing ['family'], unknown [])",
        ),
        (("settings: {}", "settings: {}\n  kind: incremental"), "(missing [], unknown ['kind'])"),
        (("settings: {}", "settings: [meta]"), "method.settings is ['meta'], not a mapping of settings"),
        (("method:", "methods:"), "no `method:` block"),
        (("method:", "method: ["), "not YAML"),
    ],
)
def test_a_method_file_that_breaks_the_rules_is_named(method_dir, change, message):
    text = (method_dir / "lst.yaml").read_text().replace("name: lst", "name: lst2")
    (method_dir / "lst2.yaml").write_text(text.replace(*change))
    with pytest.raises(ConfigError, match="lst2.yaml: ") as error:
        lst.conf.methods()
    assert message in str(error.value)
