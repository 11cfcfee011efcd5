"""What a step may read (lst.steps.settings.READS, enforced by lst.steps.step) and what a method file must say."""

import importlib
import shutil
import sys
from pathlib import Path

import pytest

import lst.conf
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


def test_the_methods_are_the_files(method_dir):
    methods = lst.conf.methods()
    assert list(methods)[0] == "base"
    incremental = {name for name, method in methods.items() if method["kind"] == "incremental"}
    assert incremental == {"finetune", "replay", "distill", "lst", "lst_meta"}
    assert {name for name, method in methods.items() if method["kind"] == "joint"} == {"joint", "joint_rfs"}
    assert {name for name, method in methods.items() if method["distill"]} == {"distill", "lst", "lst_meta"}
    assert [name for name, method in methods.items() if method["repeat_factor_sampling"]] == ["joint_rfs"]
    text = (method_dir / "lst.yaml").read_text()
    (method_dir / "mine.yaml").write_text(text.replace("name: lst", "name: mine"))
    assert lst.conf.methods()["mine"] == {**methods["lst"], "name": "mine"}


@pytest.mark.parametrize(
    "change, message",
    [
        (("name: lst2", "name: lst"), "method.name is 'lst', not its file name 'lst2'"),
        (("kind: incremental", "kind: phased"), "method.kind is 'phased', not one of"),
        (("  meta: false\n", ""), "method keys differ from base.yaml's (missing ['meta'], unknown [])"),
        (("method:", "methods:"), "no `method:` block"),
    ],
)
def test_a_method_file_that_breaks_the_rules_is_named(method_dir, change, message):
    text = (method_dir / "lst.yaml").read_text().replace("name: lst", "name: lst2")
    (method_dir / "lst2.yaml").write_text(text.replace(*change))
    with pytest.raises(ValueError, match="lst2.yaml: ") as error:
        lst.conf.methods()
    assert message in str(error.value)
