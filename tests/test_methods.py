"""Methods as plug-ins (lst.methods): typed settings checked at load, families found in lst.methods or a user's
folder, the online teacher, and docs/extending.md's method of your own run through the DAG as written."""

import re
import shlex
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest
import torch
from conftest import printed, run_step, train_base
from docs_blocks import own_method_command, own_method_files
from workflow_copy import run_snakemake, workflow_copy

import lst.conf
from lst.conf.typed import above, at_least, between, settings_from
from lst.errors import ConfigError
from lst.methods import Kind, load_method
from lst.methods.lst import Lst


class Mode(Enum):
    fast = "fast"
    exact = "exact"


@dataclass(frozen=True)
class Example:
    gamma: float = field(default=2.0, metadata=at_least(0))
    fraction: float = field(default=0.5, metadata=between(0, 1))
    size: int = field(default=50, metadata=above(0))
    mode: Mode = Mode.fast
    enabled: bool = False


def test_settings_take_defaults_and_typed_values():
    assert settings_from(Example, None, "k") == Example()
    settings = settings_from(Example, {"gamma": 0, "fraction": 1, "mode": "exact", "enabled": True}, "k")
    assert settings == Example(gamma=0.0, fraction=1.0, mode=Mode.exact, enabled=True)
    assert isinstance(settings.gamma, float)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"gama": 1.0}, "method.settings.gama: not a setting of Example (did you mean gamma?)"),
        ({"bogus": 1},
         "method.settings.bogus: not a setting of Example (its settings: gamma, fraction, size, mode, enabled)"),
        ({"gamma": -0.5}, "method.settings.gamma: -0.5 is out of range (allowed: >= 0)"),
        ({"fraction": 1.5}, "method.settings.fraction: 1.5 is out of range (allowed: in [0, 1])"),
        ({"size": 0}, "method.settings.size: 0 is out of range (allowed: > 0)"),
        ({"size": 2.5}, "method.settings.size: 2.5 is not a int"),
        ({"enabled": "yes"}, "method.settings.enabled: 'yes' is not a bool"),
        ({"gamma": True}, "method.settings.gamma: True is not a float"),
        ({"mode": "slow"}, "method.settings.mode: 'slow' is not one of fast, exact"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_the_key(values, message):
    with pytest.raises(ConfigError) as error:
        settings_from(Example, values, "method.settings")
    assert str(error.value) == message


def test_a_variant_is_its_family_with_settings():
    lst_meta = load_method(lst.conf.compose(["method=lst_meta"])["method"])
    assert type(lst_meta) is Lst and lst_meta.settings.meta and lst_meta.kind is Kind.incremental
    assert lst_meta.phase_inputs() == ("teacher_logits", "meta")
    assert load_method(lst.conf.compose(["method=lst"])["method"]).phase_inputs() == ("teacher_logits",)
    with pytest.raises(
        ConfigError, match=r"^method.settings.mta: not a setting of LstSettings \(did you mean meta\?\)$"
    ):
        load_method({"name": "x", "family": "lst", "settings": {"mta": True}})
    with pytest.raises(ConfigError, match=r"^method.family: 'lts' is not a module of lst.methods .*did you mean lst\?"):
        load_method({"name": "x", "family": "lts", "settings": {}})


FAMILY = '''\
from lst.methods.finetune import Finetune


class Mine(Finetune):
    """Fine-tuning, as a family of a user's folder."""
'''
VARIANT = "method:\n  name: mine\n  family: mine\n  settings: {}\n"
DEFAULT_LOSS_AND_BASE = {"loss": {"name": "cross_entropy", "settings": {}}, "base": "base"}  # a file without them


@pytest.fixture
def user_dir(tmp_path) -> Path:
    folder = tmp_path / "my_methods"
    folder.mkdir()
    (folder / "mine.py").write_text(FAMILY)
    (folder / "mine.yaml").write_text(VARIANT)
    return folder


def test_a_users_folder_adds_methods(user_dir):
    config = lst.conf.compose(["method=mine", f"method_dirs=[{user_dir}]"])
    assert config["method"] == {"name": "mine", "family": "mine", "settings": {}, **DEFAULT_LOSS_AND_BASE}
    assert "mine" in lst.conf.methods([user_dir])
    method = load_method(config["method"], [user_dir])
    assert type(method).__name__ == "Mine" and method.kind is Kind.incremental


@pytest.mark.parametrize(
    "source, message",
    [
        ("from lst.methods.finetune import Finetune\nclass Mine(Finetune)\n",
         "mine.py: does not import (line 2): SyntaxError"),
        ("import no_such_package\n",
         "mine.py: does not import: ModuleNotFoundError: No module named 'no_such_package'"),
        ("from lst.methods.finetune import Finetune\nclass A(Finetune): ...\nclass B(Finetune): ...\n",
         "mine.py: a family module defines one subclass of lst.methods.Method (A, B)"),
    ],
)  # fmt: skip
def test_a_users_family_that_does_not_load_is_named(user_dir, source, message):
    (user_dir / "mine.py").write_text(source)
    with pytest.raises(ConfigError) as error:
        load_method({"name": "mine", "family": "mine", "settings": {}}, [user_dir])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_users_method_may_not_take_a_builtin_name(user_dir):
    (user_dir / "lst.yaml").write_text(VARIANT.replace("mine", "lst"))
    with pytest.raises(ConfigError, match="lst.yaml: method lst is defined already, by .*conf/method/lst.yaml"):
        lst.conf.methods([user_dir])
    with pytest.raises(ConfigError, match="method_dirs: /nonexistent: not a folder"):
        lst.conf.methods(["/nonexistent"])


RANGED = """\
from dataclasses import dataclass, field

from lst.conf.typed import at_least
from lst.methods.finetune import Finetune


@dataclass(frozen=True)
class Settings:
    gamma: float = field(default=2.0, metadata=at_least(0))


class Mine(Finetune):
    Settings = Settings
"""


@pytest.mark.parametrize(
    "methods, files, message",
    [
        ("lsst", {}, "config methods: 'lsst' is not a method (did you mean lst?)"),
        ("mine", {"mine.yaml": VARIANT.replace("{}", "{mta: true}").replace("family: mine", "family: lst")},
         "method.settings.mta: not a setting of LstSettings (did you mean meta?)"),
        ("mine", {"mine.py": RANGED, "mine.yaml": VARIANT.replace("{}", "{gamma: -1}")},
         "method.settings.gamma: -1.0 is out of range (allowed: >= 0)"),
        ("mine", {"mine.py": "from lst.methods.finetune import Finetune\nclass Mine(Finetune)\n"},
         "my_methods/mine.py: does not import (line 2): SyntaxError"),
        ("mine", {"mine.yaml": VARIANT + "  loss: {name: seasaw}\n"},
         "method.loss.name: 'seasaw' is not a loss of lst.losses (cross_entropy, eql, eqlv2, seesaw, federated)"),
        ("mine", {"mine.yaml": VARIANT + "  base: lst\n"},
         "method.base of mine: 'lst' is a method of kind incremental; a base model is trained as a joint model is"),
    ],
)  # fmt: skip
def test_a_bad_method_stops_the_dag_build_in_one_line(tmp_path, methods, files, message):
    """Found while the DAG is built, before any job: one line, no traceback, nothing written."""
    root = workflow_copy(tmp_path / "wf", preset="tiny")
    folder = root / "my_methods"
    folder.mkdir()
    for name, text in {"mine.py": FAMILY, "mine.yaml": VARIANT, **files}.items():
        (folder / name).write_text(text)
    result = run_snakemake(root, "--config", f"methods=[lst,{methods}]", "method_dirs=[my_methods]", check=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("lst: ")]
    assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (root / "results").exists()


def test_a_step_refuses_a_bad_method_before_writing(dataset, split_dir, tmp_path, capfd):
    out = tmp_path / "replay.parquet"
    args = [f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={split_dir}", f"paths.replay={out}",
            "phase=1", f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    assert run_step("build_replay", *args, "method=lst", "method.settings.mta=true") == 1
    assert "method.settings.mta: not set by the method's file (a setting of its family is added as" in printed(capfd)
    assert run_step("build_replay", *args, "method=lst", "+method.settings.mta=true") == 1
    assert "method.settings.mta: not a setting of LstSettings (did you mean meta?)" in printed(capfd)
    assert run_step("build_replay", *args, "method=lts") == 1
    assert "Could not find 'method/lts'" in printed(capfd)
    assert not out.exists()


# ---- the online teacher -----------------------------------------------------------------------------------

ONLINE = """\
from lst.methods.finetune import Finetune
from lst.methods.teacher import OnlineTeacher

CALLS = []  # per iteration: the term, and facts about the teacher and the student
CRASH_AT = [0]


class FeatureDistill(Finetune):
    def teacher_terms(self, phase):
        teacher = OnlineTeacher(phase.previous, phase.device)

        def terms(forward):
            taught = teacher(forward)
            student = forward.outputs.features
            loss = sum((student[k] - taught.features[k]).pow(2).mean() for k in student)
            logits, deltas = taught.box_outputs([p[:5] for p in taught.proposals])
            CALLS.append({
                "loss": float(loss.detach()),
                "teacher_grad": any(t.requires_grad for t in taught.features.values()),
                "student_grad": all(s.requires_grad for s in student.values()),
                "teacher_training": teacher.model.training,
                "logits": tuple(logits.shape), "deltas": tuple(deltas.shape), "objectness": len(taught.objectness),
                "teacher_weights": float(sum(p.sum() for p in teacher.model.parameters())),
            })
            if len(CALLS) == CRASH_AT[0]:
                raise KeyboardInterrupt
            return {"loss_features": loss}

        return terms
"""


def user_method_phase(dataset, split_dir, tmp_path, method: str, files: dict[str, str]):
    """A user's ``method`` (its ``files`` in a folder of method_dirs) ready for a phase 1 of 4 iterations on a
    base model: ``phase(name)`` trains it into ``tmp_path / name`` and gives its weights ({} if it failed)."""
    folder = tmp_path / "methods"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    assert train_base(dataset, split_dir, tmp_path / "base") == 0
    common = [
        f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={split_dir}", "phase=1", "device=cpu",
        f"dataset.image_root={dataset['image_root']}", f"method={method}", f"method_dirs=[{folder}]",
        "train_phase.iterations=4", "train_phase.batch_size=1", "train_phase.checkpoint_period=2",
        f"paths.previous={tmp_path / 'base/model.pt'}", f"paths.replay={tmp_path / 'replay.parquet'}",
    ]  # fmt: skip
    assert run_step("build_replay", *common, f"hydra.run.dir={tmp_path}") == 0

    def phase(name: str) -> dict:
        out = [f"paths.model={tmp_path / name / 'model.pt'}", "paths.eval_curve=null", f"hydra.run.dir={tmp_path}"]
        code = run_step("train_phase", *common, *out)
        return torch.load(tmp_path / name / "model.pt", weights_only=True)["model"] if code == 0 else {}

    return phase


def test_an_online_teacher_runs_frozen_on_the_students_batch_and_resumes(dataset, split_dir, tmp_path):
    import sys

    files = {"feature_distill.py": ONLINE, "feature_distill.yaml": VARIANT.replace("mine", "feature_distill")}
    phase = user_method_phase(dataset, split_dir, tmp_path, "feature_distill", files)
    straight = phase("straight")
    calls = sys.modules["lst_user_methods.feature_distill"].CALLS
    assert len(calls) == 4
    # the same input and weights before the first update: the student's features are the teacher's
    assert calls[0]["loss"] == 0.0 and calls[-1]["loss"] > 0
    assert {c["teacher_weights"] for c in calls} == {calls[0]["teacher_weights"]}  # frozen
    assert not any(c["teacher_grad"] or c["teacher_training"] for c in calls) and all(c["student_grad"] for c in calls)
    assert calls[0]["logits"][1] == 1 + 2 and calls[0]["deltas"][1] == 4 * (1 + 2) and calls[0]["objectness"] == 5
    # killed after the checkpoint of iteration 2, resumed: bit-identical
    sys.modules["lst_user_methods.feature_distill"].CRASH_AT[0] = len(calls) + 3
    with pytest.raises(KeyboardInterrupt):
        phase("resumed")
    sys.modules["lst_user_methods.feature_distill"].CRASH_AT[0] = 0
    resumed = phase("resumed")
    assert len(calls) == 4 + 3 + 2  # the resumed run made iterations 3 and 4 only
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(value, resumed[key]) for key, value in straight.items())


# ---- docs/extending.md's method of your own, as written ---------------------------------------------------


def test_the_documented_method_of_your_own_runs_and_changes_the_weights(tmp_path):
    """Its files copied out of the page into a fresh folder, its command run on the tiny preset."""
    root = workflow_copy(tmp_path / "wf", preset="tiny")
    command = shlex.split(own_method_command())
    folder = root / next(w for w in command if w.startswith("method_dirs=")).split("=[")[1].rstrip("]")
    folder.mkdir()
    for name, text in own_method_files().items():
        (folder / name).write_text(text)
    assert command[0] == "snakemake"
    run_snakemake(root, *command[1:])
    results = root / "results" / "demo"
    for phase in (1, 2):
        focal = torch.load(results / f"seed0/lst_focal/phase{phase}/model.pt", weights_only=True)["model"]
        plain = torch.load(results / f"seed0/lst/phase{phase}/model.pt", weights_only=True)["model"]
        assert not all(torch.equal(value, plain[key]) for key, value in focal.items())
    # the same stream and teacher: only the loss differs
    replay = [(results / "seed0" / m / "phase1/replay.parquet").read_bytes() for m in ("lst", "lst_focal")]
    assert replay[0] == replay[1]
    assert "| lst_focal |" in (results / "summary.md").read_text()
    # the file edited out of its range: refused at the DAG's build, in one line, before any job
    variant = folder / "lst_focal.yaml"
    variant.write_text(variant.read_text().replace("gamma: 2.0", "gamma: -1.0"))
    bad = run_snakemake(root, "-n", *command[1:], check=False)
    assert bad.returncode != 0 and "method.settings.gamma: -1.0 is out of range (allowed: >= 0)" in bad.stderr


SEESAW_META = (
    "method:\n  name: mine\n  family: lst\n  settings: {meta: true}\n  loss: {name: seesaw}\n  base: base_seesaw\n"
)


def test_one_base_model_per_distinct_base_shared_by_the_methods_naming_it(tmp_path):
    root = workflow_copy(tmp_path / "wf", preset="tiny", methods=["lst", "lst_seesaw", "lst_eqlv2", "mine"],
                         method_dirs=["my_methods"])  # fmt: skip
    (root / "my_methods").mkdir()
    (root / "my_methods" / "mine.yaml").write_text(SEESAW_META)
    jobs = dry_run_blocks(run_snakemake(root, "-n").stdout)
    trained = sorted(job["wildcards"] for job in jobs if job["rule"] == "train_base")
    assert trained == [
        "seed=0, method=base",
        "seed=0, method=base_eqlv2",
        "seed=0, method=base_seesaw",
    ]  # three bases, each once
    linked = {job["output"]: job["input"] for job in jobs if job["rule"] == "link_base"}
    for method, base in [("lst", "base"), ("lst_seesaw", "base_seesaw"), ("lst_eqlv2", "base_eqlv2"),
                         ("mine", "base_seesaw")]:  # fmt: skip
        assert linked[f"results/demo/seed0/{method}/phase0/model.pt"] == f"results/demo/seed0/{base}/phase0/model.pt"
    # the meta-module of mine's base; mine's phases train from it
    assert [job["wildcards"] for job in jobs if job["rule"] == "train_meta"] == ["seed=0, method=base_seesaw"]
    phase1 = next(job for job in jobs if job["rule"] == "train_phase" and "mine/phase1" in job["output"])
    assert "results/demo/seed0/base_seesaw/phase0/meta.pt" in phase1["input"]


def dry_run_blocks(dry: str) -> list[dict[str, str]]:
    """The jobs of ``snakemake -n``'s output: rule, input, output and wildcards, as printed."""
    jobs = []
    for block in re.split(r"\n\[\w{3} \w{3} .+\]\n", dry):  # each job's lines follow its date
        lines = block.strip().splitlines()
        if lines and re.fullmatch(r"(local)?rule \w+:", lines[0]):
            fields = dict(line.strip().split(": ", 1) for line in lines[1:] if ": " in line)
            jobs.append({"rule": lines[0].split()[-1].rstrip(":"), **fields})
    return jobs


CRASHING = """\
from lst.methods.finetune import Finetune

CALLS = [0]
CRASH_AT = [0]


class Crashing(Finetune):
    def teacher_terms(self, phase):
        def terms(forward):
            CALLS[0] += 1
            if CALLS[0] == CRASH_AT[0]:
                raise KeyboardInterrupt
            return {}

        return terms
"""


@pytest.mark.parametrize("loss", ["eqlv2", "{name: federated, settings: {num_classes_sampled: 3}}"])  # draws 1
def test_a_stateful_loss_resumes_to_bit_identical_weights(dataset, split_dir, tmp_path, loss):
    """EQLv2's statistics and the federated loss's generator live in last.pt: a killed run ends as a straight one."""
    import sys

    loss = loss if loss.startswith("{") else f"{{name: {loss}}}"
    files = {"crashing.py": CRASHING, "crashing.yaml": VARIANT.replace("mine", "crashing") + f"  loss: {loss}\n"}
    phase = user_method_phase(dataset, split_dir, tmp_path, "crashing", files)
    straight = phase("straight")
    module = sys.modules["lst_user_methods.crashing"]
    module.CRASH_AT[0] = module.CALLS[0] + 4  # in iteration 4, after the checkpoint of iteration 2
    with pytest.raises(KeyboardInterrupt):
        phase("resumed")
    saved = torch.load(tmp_path / "resumed/train/last.pt", weights_only=True)["method_state"]["classification"]
    assert saved, "the loss's state is not in the checkpoint"
    module.CRASH_AT[0] = 0
    resumed = phase("resumed")
    assert straight and all(torch.equal(value, resumed[key]) for key, value in straight.items())
