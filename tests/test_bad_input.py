"""Bad input, step by step: each case must end its step with a clear error that names the file or key
and the problem, a non-zero exit, and nothing written where the step's outputs go.

Steps run in-process through their Hydra entrypoint (the same ``main`` that ``python -m`` runs), with the
output folder as Hydra's run dir, as the Snakemake rules do. One case also runs through Snakemake.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import TINY_TRAIN, TINY_VAL, Payload, cheap_state, files_under, printed, run_step, train_base
from PIL import Image
from workflow_copy import run_snakemake, workflow_copy

from lst.testing import write_lvis


def refused(capfd: pytest.CaptureFixture, module: str, *overrides: str) -> str:
    """What a step printed when it refused its input with exit code 1."""
    assert run_step(module, *overrides) == 1
    return printed(capfd)


def test_the_valid_dataset_passes_every_step(dataset, tmp_path):
    """The cases below differ from this one by one defect each."""
    results = tmp_path / "results"
    check = [f"paths.data_dir={dataset['data_dir']}", f"dataset.image_root={dataset['image_root']}"]
    assert run_step("check_data", *check, f"paths.report={results / 'check.md'}", f"hydra.run.dir={results}") == 0
    assert "images checked: 3" in (results / "check.md").read_text()
    split = [f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={results / 'split'}"]
    assert run_step("split", *split, "phases.sizes=[2,1]", f"hydra.run.dir={results / 'split'}") == 0


def _set(path: list, value) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


JSON_CASES = {
    # name: (which file, change to its data, what the error must say)
    "missing_top_key": ("train", lambda d: d.pop("annotations"), "missing required field `annotations`"),
    "missing_bbox": ("train", lambda d: d["annotations"][0].pop("bbox"), "missing required field `bbox`"),
    "wrong_type": ("train", _set(["images", 0, "width"], "wide"), "Expected `int`, got `str`"),
    "duplicate_image_ids": ("train", _set(["images", 1, "id"], 1), "duplicate image ids [1]"),
    "duplicate_annotation_ids": ("train", _set(["annotations", 1, "id"], 10), "duplicate annotation ids [10]"),
    "duplicate_category_ids": ("train", _set(["categories", 2, "id"], 1), "duplicate category ids [1]"),
    "unknown_image": ("train", _set(["annotations", 0, "image_id"], 99), "annotations [10] refer to unknown image"),
    "unknown_category": ("train", _set(["annotations", 0, "category_id"], 99), "refer to unknown category ids"),
    "empty_segmentation": ("train", _set(["annotations", 0, "segmentation"], []), "[10] have an empty segmentation"),
    "negative_box": ("train", _set(["annotations", 0, "bbox"], [1, 1, -4, 4]), "negative box width or height"),
    "box_outside_image": ("train", _set(["annotations", 0, "bbox"], [30, 1, 4, 4]), "lie outside their image"),
    "image_without_size": ("train", _set(["images", 0, "height"], 0), "[1] have a non-positive size"),
    "image_without_path": ("train", lambda d: d["images"][1].pop("coco_url"), "neither file_name nor coco_url"),
    "unknown_neg_category": ("train", _set(["images", 0, "neg_category_ids"], [42]), "neg_category_ids: [42]"),
    "no_categories": ("train", _set(["categories"], []), "has no categories"),
    "val_adds_a_category": ("val", _set(["annotations", 0, "category_id"], 7), "unknown category ids"),
    "val_repeats_an_image_id": (
        "val",
        lambda d: d["images"].append(dict(d["images"][0], file_name="val2017/d.png")),
        "duplicate image ids [3]",
    ),
    "not_a_crowd_flag": ("train", _set(["annotations", 0, "iscrowd"], 2), "an iscrowd other than 0 or 1"),
}


@pytest.mark.parametrize("name", JSON_CASES)
def test_corrupt_json_is_refused(dataset, tmp_path, capfd, name):
    which, change, message = JSON_CASES[name]
    data = json.loads(json.dumps(TINY_TRAIN if which == "train" else TINY_VAL))
    change(data)
    bad = write_lvis(tmp_path / f"{which}.json", data)
    paths = {"train": dataset["train_json"], "val": dataset["val_json"], which: bad}
    out = tmp_path / "results" / "data"
    code = run_step(
        "prepare_data", f"dataset.train_json={paths['train']}", f"dataset.val_json={paths['val']}",
        f"paths.data_dir={out}", f"hydra.run.dir={out}",
    )  # fmt: skip
    error = printed(capfd)
    assert code == 1
    assert f"{bad}: " in error and message in error
    assert files_under(tmp_path / "results") == []


@pytest.mark.parametrize("cut", ["truncated", "not_json"])
def test_unparseable_json_is_refused(dataset, tmp_path, capfd, cut):
    text = json.dumps(TINY_TRAIN)
    bad = tmp_path / "train.json"
    bad.write_text(text[: len(text) // 2] if cut == "truncated" else "images: [1, 2]")
    out = tmp_path / "results" / "data"
    log = refused(
        capfd, "prepare_data", f"dataset.train_json={bad}", f"dataset.val_json={dataset['val_json']}",
        f"paths.data_dir={out}", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert f"{bad}: not valid json" in log
    assert files_under(tmp_path / "results") == []


def _remove(path: Path) -> None:
    path.unlink()


def _garble(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


def _resize(path: Path) -> None:
    Image.new("RGB", (7, 7)).save(path)


IMAGE_CASES = {
    "missing": (_remove, "1 images missing: {path}"),
    "unreadable": (_garble, "1 images unreadable: {path}"),
    "other_size": (_resize, "of another size than the annotations say: {path} is 7x7, annotated 16x12"),
}


@pytest.fixture
def image_root(dataset, tmp_path) -> Path:
    """A private copy of the images, for a case to break."""
    root = tmp_path / "coco"
    for path in files_under(dataset["image_root"]):
        target = root / path.relative_to(dataset["image_root"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return root


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_image_problems_stop_before_training(dataset, image_root, tmp_path, capfd, name):
    damage, message = IMAGE_CASES[name]
    broken = image_root / "train2017" / "b.png"
    damage(broken)
    results = tmp_path / "results"
    log = refused(
        capfd, "check_data", f"paths.data_dir={dataset['data_dir']}", f"dataset.image_root={image_root}",
        f"paths.report={results / 'check.md'}", f"hydra.run.dir={results}",
    )  # fmt: skip
    assert f"the images under {image_root}" in log
    assert message.format(path=broken) in log
    assert files_under(results) == []


def test_all_missing_images_are_listed_together(dataset, tmp_path, capfd):
    results = tmp_path / "results"
    log = refused(
        capfd, "check_data", f"paths.data_dir={dataset['data_dir']}", f"dataset.image_root={tmp_path / 'nowhere'}",
        f"paths.report={results / 'check.md'}", f"hydra.run.dir={results}",
    )  # fmt: skip
    assert "3 images missing: " in log
    for name in ("train2017/a.png", "train2017/b.png", "val2017/c.png"):
        assert str(tmp_path / "nowhere" / name) in log
    assert files_under(results) == []


MASK_CASES = {
    "two_point_polygon": ([[1, 1, 5, 1]], "annotation 10: a polygon with 4 coordinates"),
    "odd_polygon": ([[1, 1, 5, 1, 5, 5, 1]], "annotation 10: a polygon with 7 coordinates"),
    "rle_of_another_size": ({"size": [5, 5], "counts": [25]}, "annotation 10: an RLE of size [5, 5] on a 10x20"),
    "rle_counts_short": ({"size": [10, 20], "counts": [3, 4]}, "annotation 10: RLE counts that sum to 7, not 200"),
    "text_in_polygon": ([[1, "a", 5, 1, 5, 5]], "annotation 10: neither polygons nor RLE (Expected `float`, got `str`"),
}


@pytest.mark.parametrize("name", MASK_CASES)
def test_segmentations_that_do_not_decode_stop_before_training(dataset, tmp_path, capfd, name):
    segmentation, message = MASK_CASES[name]
    data = json.loads(json.dumps(TINY_TRAIN))
    data["annotations"][0]["segmentation"] = segmentation
    data_dir = tmp_path / "data"
    assert run_step(
        "prepare_data", f"dataset.train_json={write_lvis(tmp_path / 'train.json', data)}",
        f"dataset.val_json={dataset['val_json']}", f"paths.data_dir={data_dir}", f"hydra.run.dir={data_dir}",
    ) == 0  # fmt: skip
    results = tmp_path / "results"
    log = refused(
        capfd, "check_data", f"paths.data_dir={data_dir}", f"dataset.image_root={dataset['image_root']}",
        f"paths.report={results / 'check.md'}", f"hydra.run.dir={results}",
    )  # fmt: skip
    assert f"the annotations in {data_dir}" in log and message in log
    assert files_under(results) == []


SPLIT_CASES = {
    "phase_without_classes": ("phases.sizes=[2,0,1]", "phases.sizes: phase 1 would have 0 classes"),
    "base_too_large": ("phases.base=5 phases.step=1", "phases.base = 5 is larger than the number of classes (3)"),
    "more_classes_than_exist": ("phases.sizes=[2,2]", "phases.sizes need 4 classes ([2, 2]) but the dataset has 3"),
    "zero_step": ("phases.base=2 phases.step=0", "phases.step = 0: a phase needs at least one class"),
    "no_phases": ("phases.sizes=[]", "phases.sizes: no phases"),
}


@pytest.mark.parametrize("name", SPLIT_CASES)
def test_impossible_phases_are_refused(dataset, tmp_path, capfd, name):
    overrides, message = SPLIT_CASES[name]
    out = tmp_path / "results" / "split"
    log = refused(
        capfd, "split", f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={out}", *overrides.split(),
        f"hydra.run.dir={out}",
    )  # fmt: skip
    assert message in log
    assert files_under(tmp_path / "results") == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("replay.variant=rand_balanced", "replay.variant: 'rand_balanced' is not one of cycle, with_replacement"),
        ("replay.quota_rounding=nearest", "replay.quota_rounding: 'nearest' is not one of half_even, half_up"),
        ("replay.remainder=shuffled", "replay.remainder: 'shuffled' is not one of last_epoch_unshuffled"),
        ("replay.world_size=0", "replay.world_size: 0 is out of range (allowed: >= 1)"),
        ("train_phase.iterations=0", "train_phase.iterations: 0 is out of range (allowed: >= 1)"),
        ("train_phase.flip_prob=2", "train_phase.flip_prob: 2.0 is out of range (allowed: in [0, 1])"),  # a float key
        ("phase=3", "phase: phase 3 has no classes"),
    ],
)
def test_bad_replay_settings_are_refused(dataset, tmp_path, capfd, override, message):
    results = tmp_path / "results"
    split = [f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={results / 'split'}"]
    assert run_step("split", *split, "phases.sizes=[2,1]", f"hydra.run.dir={results / 'split'}") == 0
    out = results / "lst" / "phase1"
    log = refused(
        capfd, "build_replay", *split, f"paths.replay={out / 'replay.parquet'}", "phase=1", "method=lst",
        override, f"hydra.run.dir={out}",
    )  # fmt: skip
    assert message in log
    assert files_under(out) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("phases.bse=3", "phases.bse: not a key of phases (did you mean base?) (override phases.bse)"),
        ("trian_base.iterations=5", "trian_base: not a key of the config (did you mean train_base?)"),
        ("eval.max_det=100", "eval.max_det: not a key of eval (did you mean max_dets?)"),
    ],
)
def test_misspelled_config_keys_are_refused(dataset, tmp_path, capfd, override, message):
    """At composition (lst.conf.schema), in one line naming the key, before the step reads anything."""
    out = tmp_path / "results" / "split"
    code = run_step("split", f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={out}", override,
                    f"hydra.run.dir={out}")  # fmt: skip
    assert code == 1
    error = capfd.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert files_under(tmp_path / "results") == []


def _wrong_shape(path: Path) -> None:
    state = cheap_state()
    state["backbone.fpn.inner_blocks.0.0.weight"] = torch.zeros(256, 64, 1, 1)
    torch.save(state, path)


def _missing_key(path: Path) -> None:
    state = cheap_state()
    del state["backbone.body.layer4.2.conv3.weight"]
    torch.save(state, path)


WEIGHTS_CASES = {
    "wrong_shape": (
        _wrong_shape,
        "'backbone.fpn.inner_blocks.0.0.weight': (256, 64, 1, 1) in the checkpoint, expected (256, 256, 1, 1)",
    ),
    "missing_key": (_missing_key, "missing required keys ['backbone.body.layer4.2.conv3.weight' (1 in all)]"),
    "not_a_checkpoint": (lambda p: p.write_text("weights\n"), "not a checkpoint"),
    "unsafe_pickle": (lambda p: torch.save({"model": Payload()}, p), "objects other than tensors"),
    "absent": (lambda p: None, "weights file does not exist"),
}


@pytest.mark.parametrize("name", WEIGHTS_CASES)
def test_bad_coco_checkpoints_are_refused(tmp_path, capfd, name):
    make, message = WEIGHTS_CASES[name]
    source = tmp_path / "coco.pth"
    make(source)
    out = tmp_path / "results" / "weights"
    log = refused(
        capfd, "trim_weights", f"paths.source_weights={source}", f"paths.init={out / 'init.pt'}",
        f"hydra.run.dir={out}",
    )  # fmt: skip
    assert f"{source}: " in log and message in log
    assert "unpickled!" not in log
    assert files_under(tmp_path / "results") == []


def _cheap_imagenet_state(constructor=torchvision.models.mobilenet_v2) -> dict[str, torch.Tensor]:
    """A torchvision ImageNet state dict's names and shapes, one value per tensor (tiny files)."""
    return {key: torch.zeros((), dtype=v.dtype).expand(v.shape) for key, v in constructor().state_dict().items()}


def _saved(change: Callable[[dict], None], constructor=torchvision.models.mobilenet_v2) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        state = _cheap_imagenet_state(constructor)
        change(state)
        torch.save(state, path)

    return make


BACKBONE_CASES = {
    # name: (how to make the file, model config, what the error must say)
    "not_a_state_dict": (lambda p: p.write_text("weights\n"), "mobilenet_v2_fpn", "not a state dict"),
    "unsafe_pickle": (
        lambda p: torch.save({"features.0.0.weight": Payload()}, p), "mobilenet_v2_fpn", "objects other than tensors"
    ),
    "missing_key": (
        _saved(lambda s: s.pop("features.18.1.bias")), "mobilenet_v2_fpn",
        "not torchvision mobilenet_v2() ImageNet weights: missing keys ['features.18.1.bias' (1 in all)]",
    ),
    "wrong_shape": (
        _saved(lambda s: s.update({"features.0.0.weight": torch.zeros(16, 3, 3, 3)})), "mobilenet_v2_fpn",
        "wrong shapes (1): 'features.0.0.weight': (16, 3, 3, 3) in the file, (32, 3, 3, 3) in the model",
    ),
    "another_backbone": (
        _saved(lambda s: None, torchvision.models.resnet18), "mobilenet_v2_fpn",
        "none of its keys is a body key: the keys of a ResNet (layer1-4.*)",
    ),
    "resnet18_for_resnet50": (
        _saved(lambda s: None, torchvision.models.resnet18), "resnet50_fpn",
        "not torchvision resnet50() ImageNet weights: missing keys ['layer1.0.conv3.weight'",
    ),
    "backbone_without_format": (_saved(lambda s: None), "small", "model.backbone=small takes no pretrained weights"),
    "absent": (lambda p: None, "mobilenet_v2_fpn", "backbone weights file does not exist"),
}  # fmt: skip


@pytest.mark.parametrize("name", BACKBONE_CASES)
def test_bad_backbone_weights_are_refused(dataset, split_dir, tmp_path, capfd, name):
    make, model, message = BACKBONE_CASES[name]
    source = tmp_path / "imagenet.pth"
    make(source)
    out = tmp_path / "results" / "base"
    code = train_base(dataset, split_dir, out, f"model={model}", f"model.backbone_weights={source}")
    log = printed(capfd)
    assert code == 1
    assert f"{source}: " in log and message in log
    assert "unpickled!" not in log
    assert files_under(tmp_path / "results") == []


@pytest.fixture(scope="module")
def base_model(dataset, split_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base")
    assert train_base(dataset, split_dir, out) == 0
    return out / "model.pt"


@pytest.fixture(scope="module")
def phase1_inputs(dataset, split_dir, base_model, tmp_path_factory) -> list[str]:
    """The overrides of phase 1's inputs with replay and distillation: the base model, stream and teacher logits."""
    out = tmp_path_factory.mktemp("phase1")
    common = [f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={split_dir}", "phase=1", "device=cpu",
              f"dataset.image_root={dataset['image_root']}", "method=lst",
              "train_phase.iterations=2", "train_phase.batch_size=1"]  # fmt: skip
    inputs = [f"paths.previous={base_model}", f"paths.replay={out / 'replay.parquet'}",
              f"paths.teacher_logits={out / 'teacher_logits.parquet'}"]  # fmt: skip
    assert run_step("build_replay", *common, *inputs, f"hydra.run.dir={out}") == 0
    assert run_step("extract_logits", *common, *inputs, f"hydra.run.dir={out}") == 0
    return common + inputs


def _config_case_args(step: str, dataset, split_dir, out: Path, request) -> list[str]:
    """The overrides that ``step`` runs with (its inputs, outputs in ``out``) before the bad value is added."""
    data = [f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={split_dir}", "device=cpu",
            f"dataset.image_root={dataset['image_root']}", f"hydra.run.dir={out}"]  # fmt: skip
    if step == "train_phase":
        return [*request.getfixturevalue("phase1_inputs"), f"paths.model={out / 'model.pt'}",
                f"paths.work_dir={out / 'train'}", "paths.eval_curve=null", f"hydra.run.dir={out}"]  # fmt: skip
    if step == "train_meta":
        return [*data, f"paths.previous={request.getfixturevalue('base_model')}", f"paths.model={out / 'meta.pt'}"]
    if step == "evaluate":
        return [*data, f"paths.model={request.getfixturevalue('base_model')}", f"paths.out_dir={out}",
                f"paths.gallery={out / 'gallery.png'}"]  # fmt: skip
    if step == "check_data":
        return [*data, f"paths.report={out / 'check.md'}"]
    if step == "make_demo":
        return [f"paths.out_dir={out}", f"hydra.run.dir={out}"]
    raise AssertionError(step)


CONFIG_CASES = {
    # name: (step, bad override, what the error must say); none of these may end in a traceback
    "optimizer": ("train_base", "train_base.optimizer=rmsprop", "train_base.optimizer: 'rmsprop' is not one of sgd"),
    "schedule": ("train_base", "train_base.schedule=linear", "train_base.schedule: 'linear' is not one of"),
    "amp_mode": ("train_base", "train_base.amp=fp32", "train_base.amp: 'fp32' is not one of off, bf16, fp16"),
    "amp_fp16_on_cpu": ("train_base", "train_base.amp=fp16", "train.amp: fp16 needs a CUDA device"),
    "joint_budget": ("train_base", "train_base.joint_budget=all", "train_base.joint_budget: 'all' is not one of"),
    "batch_size": ("train_base", "train_base.batch_size=0", "train_base.batch_size: 0 is out of range (allowed: >= 1)"),
    "backbone": ("train_base", "model.backbone=vgg16", "model.backbone: 'vgg16' is not one of small, resnet18_fpn"),
    "device": ("train_base", "device=tpu0", "device: 'tpu0' is not a device"),
    "phase_optimizer": ("train_phase", "train_phase.optimizer=sgdw", "train_phase.optimizer: 'sgdw' is not one of"),
    "distill_groups": ("train_phase", "distill.group_images=0", "distill.group_images: 0 is out of range"),
    "meta_episode": ("train_meta", "meta.novel_per_episode=2", "meta.novel_per_episode: 2 novel classes per episode"),
    "max_dets": ("evaluate", "eval.max_dets=0", "eval.max_dets: 0 is out of range (allowed: >= 1)"),
    "eval_amp": ("evaluate", "eval.amp=fp8", "eval.amp: 'fp8' is not one of"),
    "check_workers": ("check_data", "check.workers=0", "check.workers: 0 is out of range (allowed: >= 1)"),
    "demo_spec": ("make_demo", "+demo.tail_instances=0", "demo: need 1 <= tail_instances <= head_instances"),
    "demo_field": ("make_demo", "+demo.colour=red", "demo.colour: not a field of lst.data.demo.DemoSpec"),
}


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_bad_config_values_are_refused_in_one_line(dataset, split_dir, tmp_path, capfd, request, name):
    """Each was a ValueError (or RuntimeError) traceback before lst.errors; now one line naming the key (the
    choices and types of lst.conf.schema: at composition, before the step reads anything)."""
    step, override, message = CONFIG_CASES[name]
    out = tmp_path / "results" / step
    if step == "train_base":
        code = train_base(dataset, split_dir, out, override)
    else:
        code = run_step(step, *_config_case_args(step, dataset, split_dir, out, request), override)
    log = printed(capfd)
    assert code == 1
    assert message in log
    assert "Error executing job" not in log and "Traceback" not in log  # what Hydra prints of an uncaught exception
    assert files_under(tmp_path / "results") == []


def test_missing_images_stop_the_dag_before_training(tmp_path):
    """Through Snakemake: the check fails before any training; its report is not written. (A folder that does
    not exist is refused earlier, when the DAG is built: tests/test_dag_checks.py.)"""
    (tmp_path / "missing").mkdir()  # the folder is there, its images are not
    files = {"train": write_lvis(tmp_path / "train.json", TINY_TRAIN)}
    files["val"] = write_lvis(tmp_path / "val.json", TINY_VAL)
    dataset = {"name": "noimages", "train_json": str(files["train"]), "val_json": str(files["val"]),
               "image_root": str(tmp_path / "missing")}  # fmt: skip
    root = workflow_copy(tmp_path / "wf", preset="tiny", dataset=dataset, phases={"sizes": [2, 1]}, methods=["lst"])
    result = run_snakemake(root, "results/noimages/seed0/lst/phase1/model.pt", check=False)
    assert result.returncode != 0
    log = (root / "results/noimages/logs/check_data.log").read_text()
    assert f"3 images missing: {tmp_path / 'missing'}" in log
    outputs = [p.relative_to(root / "results/noimages") for p in files_under(root / "results/noimages")]
    assert not [p for p in outputs if p.suffix == ".pt"]
    assert not (root / "results/noimages/data/check.md").exists()


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda text: text[: len(text) // 2], "not valid json: Input data was truncated"),
        (lambda text: "images: [1, 2]", "not valid json"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "categories"}),
         "not an LVIS-format file: Object missing required field `categories`"),
    ],
    ids=["truncated", "not_json", "no_categories"],
)  # fmt: skip
def test_a_train_json_read_at_dag_build_is_refused_in_one_line(tmp_path, spoil, message):
    """phases: {base, step} without num_incremental: the workflow counts the categories while it builds the
    DAG, through the steps' checked reader."""
    train = write_lvis(tmp_path / "train.json", TINY_TRAIN)
    train.write_text(spoil(train.read_text()))
    val = write_lvis(tmp_path / "val.json", TINY_VAL)
    dataset = {"name": "spoilt", "train_json": str(train), "val_json": str(val), "image_root": str(tmp_path)}
    root = workflow_copy(tmp_path / "wf", preset="tiny", dataset=dataset, phases={"base": 2, "step": 1})
    result = run_snakemake(root, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("lst: ")]
    assert len(lines) == 1 and lines[0].startswith(f"lst: {train}: {message}"), result.stderr
    assert not (root / "results").exists()


@pytest.mark.parametrize(
    "step, override, message",
    [
        ("train_base", "train_base.lr=-0.01", "train_base.lr: -0.01 is out of range (allowed: >= 0)"),
        ("train_phase", "train_phase.flip_prob=1.5", "train_phase.flip_prob: 1.5 is out of range (allowed: in [0, 1])"),
        ("evaluate", "eval.score_thresh=-0.1", "eval.score_thresh: -0.1 is out of range (allowed: in [0, 1])"),
        ("all", "model.anchor_sizes=[8,0,32]", "model.anchor_sizes[1]: 0 is out of range (allowed: > 0)"),
    ],
)  # fmt: skip
def test_a_setting_out_of_range_stops_the_dag_build_in_one_line(tmp_path, step, override, message):
    """Checked when the config is loaded (lst.conf.schema's ranges), before the DAG's first job."""
    root = workflow_copy(tmp_path / "wf", preset="tiny", overrides={step: [override]})
    result = run_snakemake(root, "-n", check=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("lst: ")]
    assert result.returncode == 1 and lines == [f"lst: {message}"], result.stderr
