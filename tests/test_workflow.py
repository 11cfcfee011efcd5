"""End to end: the whole DAG on the embedded dataset with the tiny preset, through snakemake."""

import json
import re
import shutil
import subprocess

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import step_command
from PIL import Image
from workflow_copy import REPO, paper_workflow, run_snakemake, workflow_copy

from lst.reporting import gallery

METRICS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}


def test_whole_dag_writes_every_interface_file(tiny_run):
    root, result = tiny_run
    results = root / "results" / "demo"
    assert "summary written to results/demo/summary.md" in result.stdout + result.stderr
    for name in ("images", "annotations", "categories"):
        assert (results / "data" / f"{name}.parquet").is_file()
    split = pd.read_parquet(results / "split" / "categories.parquet")
    assert list(split.columns) == [
        "category_id",
        "name",
        "frequency",
        "instance_count",
        "image_count",
        "rank",
        "phase",
    ]
    assert split.groupby("phase").size().to_dict() == {0: 12, 1: 6, 2: 6}
    assert (results / "split" / "phases.md").read_text().count("\n") == 5
    for method in ("finetune", "lst"):
        # phase 0 of an incremental method is the shared base model
        assert (results / "seed0" / method / "phase0" / "model.pt").resolve() == (
            results / "seed0/base/phase0/model.pt"
        ).resolve()
        assert (results / "seed0" / method / "phase0" / "eval" / "metrics.parquet").is_file()
        for phase in (1, 2):
            folder = results / "seed0" / method / f"phase{phase}"
            checkpoint = torch.load(folder / "model.pt", weights_only=True)
            assert len(checkpoint["category_ids"]) == 12 + 6 * phase
            assert checkpoint["category_ids"] == split.sort_values("rank")["category_id"].tolist()[: 12 + 6 * phase]
            replay = pd.read_parquet(folder / "replay.parquet")
            new = set(split.loc[split["phase"] == phase, "category_id"])
            if method == "lst":  # balanced replay mixes old classes in
                assert not set(replay["category_id"]) <= new
            else:
                assert set(replay["category_id"]) <= new
            for name in ("metrics", "per_class", "detections"):
                assert (folder / "eval" / f"{name}.parquet").is_file()
            tables_md = (folder / "eval" / "metrics.md").read_text()  # the same numbers for people
            assert "| AP |" in tables_md and "| <10 |" in tables_md and tables_md.count("\n| ") >= 12 + 6 * phase
    logits = pq.read_table(results / "seed0" / "lst" / "phase1" / "teacher_logits.parquet")
    assert logits.schema.field("logits").type.list_size == 1 + 12
    # lst_seesaw: its own base model, trained with Seesaw; the objectness logit kept last as the phases grow,
    # and left out of the distilled scores
    seesaw = results / "seed0" / "lst_seesaw"
    assert (seesaw / "phase0" / "model.pt").resolve() == (results / "seed0/base_seesaw/phase0/model.pt").resolve()
    for phase in (0, 1, 2):
        checkpoint = torch.load(seesaw / f"phase{phase}" / "model.pt", weights_only=True)
        rows = checkpoint["model"]["roi_heads.box_predictor.cls_score.weight"]
        assert len(rows) == 1 + 12 + 6 * phase + 1 and checkpoint["config"]["model"]["extra_logits"] == 1
    logits = pq.read_table(seesaw / "phase1" / "teacher_logits.parquet")
    assert logits.schema.field("logits").type.list_size == 1 + 12
    assert set(logits.column("flip").to_pylist()) == {False, True}
    assert not (results / "seed0" / "finetune" / "phase1" / "teacher_logits.parquet").exists()
    # the joint baseline learns every class at once, with no incremental phases
    joint = torch.load(results / "seed0" / "joint_rfs" / "phase2" / "model.pt", weights_only=True)
    assert joint["category_ids"] == split.sort_values("rank")["category_id"].tolist()
    assert not (results / "seed0" / "joint_rfs" / "phase1").exists()
    # Hydra's record of each step's config is kept beside the logs, never among the outputs
    assert (results / "logs/hydra/train_phase/seed0_lst_phase1/config.yaml").is_file()
    assert not list(results.rglob(".hydra")) and not list(results.rglob("train_phase.log"))
    rfs_log = (root / "results/demo/logs/train_joint/seed0_joint_rfs.log").read_text()
    repeats = float(rfs_log.split("repeat-factor sampling: ")[1].split()[0])
    assert repeats > 1.0  # the tiny preset's threshold repeats the rarer classes' images
    # lst_meta: the new rows come from the meta-module trained on the base classes
    assert (results / "seed0" / "base" / "phase0" / "meta.pt").is_file()
    assert (
        "generated the rows of 6 new classes"
        in (root / "results/demo/logs/train_phase/seed0_lst_meta_phase1.log").read_text()
    )


def test_metrics_and_summary(tiny_run):
    root, _ = tiny_run
    results = root / "results" / "demo"
    metrics = pd.read_parquet(results / "seed0" / "lst" / "phase2" / "eval" / "metrics.parquet")
    assert list(metrics.columns) == ["iou_type", "metric", "value"]
    for iou_type in ("segm", "bbox"):
        names = set(metrics.loc[metrics["iou_type"] == iou_type, "metric"])
        assert METRICS | {"AP_phase0", "AP_phase1", "AP_phase2"} <= names
    summary = pd.read_parquet(results / "summary.parquet")
    pairs = set(zip(summary["method"], summary["phase"], strict=True))
    incremental = {(m, k) for m in ("finetune", "lst", "lst_meta", "lst_seesaw") for k in (1, 2)}
    assert pairs == {("base", 0), ("base_seesaw", 0), ("joint_rfs", 2)} | incremental
    table = (results / "summary.md").read_text()
    assert "| finetune |" in table and "| lst |" in table and "| joint_rfs |" in table
    # each incremental method's phase 0 is its own base model's AP
    base_ap = summary[(summary["iou_type"] == "segm") & (summary["metric"] == "AP")].set_index("method")["value"]
    for method, base in (("lst", "base"), ("lst_seesaw", "base_seesaw")):
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        assert row.split(" | ")[1] == f"{100 * base_ap[base]:.1f}", row
    for plot in ("forgetting.png", "per_class_ap.png", "eval_curve.png"):
        assert (results / "plots" / plot).read_bytes().startswith(b"\x89PNG")
    # the galleries: a row per chosen val image, the ground truth and a column per model of the last phase
    # (plots/), or the model itself (eval/ of each model)
    cell, title = round(gallery.CELL * gallery.DPI), round(gallery.TITLE * gallery.DPI)
    for png, columns in [
        ("plots/gallery.png", 6),
        ("seed0/lst/phase2/eval/gallery.png", 2),
        ("seed0/lst/phase0/eval/gallery.png", 2),
    ]:
        with Image.open(results / png) as image:
            assert image.size == (columns * cell, 6 * cell + title), png
    drawn = (results / "logs/gallery.log").read_text()
    # each model's threshold, in the log and under its column's title
    assert re.search(r"gallery.png \(phase 2\): finetune (score >= \d\.\d\d|no correct detection), lst ", drawn)
    # periodic evaluation is off in the tiny preset: every model has an empty curve
    for folder in ("base/phase0", "lst/phase0", "lst/phase2", "joint_rfs/phase2"):
        curve = pd.read_parquet(results / "seed0" / folder / "eval_curve.parquet")
        assert list(curve.columns) == ["iteration", "iou_type", "metric", "value"] and curve.empty


def test_html_report(tiny_report):
    html = tiny_report.read_text(errors="replace")
    assert "forgetting.png" in html and "per_class_ap.png" in html and "eval_curve.png" in html
    assert "gallery.png" in html
    assert "Galleries" in html and "predictions on val images of its phase" in html  # each model's, captioned


def test_nothing_to_redo_and_rerun_from_a_phase(tiny_run):
    root, _ = tiny_run
    assert "Nothing to be done" in run_snakemake(root, "-n").stdout
    # each gallery is an output of its rule: forced, the rule's job is what would run
    for target, rule in [("seed0/lst/phase2/eval/gallery.png", "evaluate"), ("plots/gallery.png", "gallery")]:
        assert jobs_of(run_snakemake(root, "-n", "--force", f"results/demo/{target}").stdout) == {rule}
    dry = run_snakemake(root, "-n", "--forcerun", "train_phase").stdout
    assert "train_base" not in dry.split("Job stats")[1]
    assert "train_phase" in dry
    # a changed Hydra override of one step reruns that step and what depends on it, nothing upstream
    original = (root / "test.yaml").read_text()
    config = yaml.safe_load(original)
    config["overrides"] = {"train_phase": ["train_phase.lr=0.002"]}
    try:
        (root / "test.yaml").write_text(yaml.safe_dump(config))
        dry = run_snakemake(root, "-n").stdout
    finally:
        (root / "test.yaml").write_text(original)
    jobs = {line.split()[0] for line in dry.split("Job stats:")[-1].split("\n\n")[0].splitlines()[3:]}
    assert "Rules with provenance triggered jobs: train_phase" in dry
    assert {"train_phase", "evaluate", "report"} <= jobs and not {"train_base", "split", "build_replay"} & jobs


def dry_run_jobs(root, *args, **changes) -> tuple[set[str], set[str]]:
    """The rules of a dry run's jobs with the test config changed, and of those a changed setting triggered
    (Snakemake names only those whose inputs stay: a job downstream of a rerun reruns for its input)."""
    original = (root / "test.yaml").read_text()
    try:
        (root / "test.yaml").write_text(yaml.safe_dump(yaml.safe_load(original) | changes))
        dry = run_snakemake(root, "-n", *args).stdout
    finally:
        (root / "test.yaml").write_text(original)
    provenance = re.search(r"Rules with provenance triggered jobs: (.*)", dry)
    return jobs_of(dry), set(provenance[1].split()) if provenance else set()


def jobs_of(dry: str) -> set[str]:
    """The rules of the jobs in a dry run's job stats."""
    return {line.split()[0] for line in dry.split("Job stats:")[-1].split("\n\n")[0].splitlines()[3:]} - {"total"}


DATA_STEPS = {"make_demo", "prepare_data", "check_data", "split"}


def test_a_changed_setting_reruns_exactly_the_steps_that_read_it(tiny_run):
    root, _ = tiny_run
    # DDP processes: the replay streams and the training jobs, never the data steps
    readers = {"build_replay", "train_base", "train_joint", "train_phase"}
    jobs, triggered = dry_run_jobs(root, processes_per_train=2)
    assert {"build_replay", "train_base", "train_joint"} <= triggered <= readers and "train_phase" in jobs
    assert not DATA_STEPS & jobs
    # train_phase for its own setting: with only train_phase allowed to run, its inputs stay
    phase1 = "results/demo/seed0/lst/phase1/model.pt"
    assert dry_run_jobs(root, phase1, "--allowed-rules", "train_phase", processes_per_train=2)[1] == {"train_phase"}
    assert dry_run_jobs(root, phase1, "--allowed-rules", "train_phase", threads=1)[0] == set()
    # another split of the 24 classes into the same number of phases: split and what reads its files
    jobs, triggered = dry_run_jobs(root, phases={"base": 10, "step": 7, "num_incremental": 2})
    assert triggered == {"split"} and {"split", "build_replay", "train_base", "report"} <= jobs
    assert not {"make_demo", "prepare_data", "check_data"} & jobs
    # the gallery settings: the evaluations draw their own, the gallery rule the dataset's; not the report
    fewer = {"overrides": {"all": ["report.gallery.images=2"]}}
    jobs, triggered = dry_run_jobs(root, **fewer)
    assert triggered == {"evaluate"} and {"gallery", "report"} <= jobs and not DATA_STEPS & jobs
    assert dry_run_jobs(root, "results/demo/plots/gallery.png", "--allowed-rules", "gallery", **fewer)[1] == {"gallery"}
    # another seed: its own folder of models, streams and evaluations; the data steps and seed 0's are kept,
    # and only the report and the gallery (which list the models) rerun for their changed settings
    jobs, triggered = dry_run_jobs(root, seeds=[0, 1])
    assert {"build_replay", "train_base", "train_joint", "train_meta", "train_phase", "evaluate"} <= jobs
    assert not DATA_STEPS & jobs and triggered == {"report", "gallery"}


def test_replay_indices_build_from_annotations_alone(tmp_path):
    from lst.data.demo import DemoSpec, generate_demo

    files = generate_demo(tmp_path / "data", DemoSpec(seed=1))
    shutil.rmtree(files["image_root"])  # no pixels
    dataset = {"name": "nopixels", "train_json": str(files["train_json"]), "val_json": str(files["val_json"]),
               "image_root": str(tmp_path / "missing")}  # fmt: skip
    root = workflow_copy(tmp_path / "wf", preset="tiny", dataset=dataset)
    run_snakemake(root, "results/nopixels/seed0/lst/phase1/replay.parquet")
    assert (root / "results/nopixels/seed0/lst/phase1/replay.parquet").is_file()
    assert not list((root / "results").rglob("model.pt"))


def test_config_is_validated(tmp_path):
    root = workflow_copy(tmp_path, prest="tiny")
    result = run_snakemake(root, "-n", check=False)
    assert result.returncode != 0
    assert "prest" in result.stdout + result.stderr


METHOD_FILE = """\
# @package _global_
# lst with fixed-draw replay: epoch 0's old-class images again in every epoch
method:
  name: lst_fixed_draw
  family: lst
  settings: {}
replay:
  variant: fixed_draw
"""


def test_a_method_is_one_file(tmp_path):
    """docs/extending.md's example: a file in src/lst/conf/method/ is a method of the DAG, its steps compose it."""
    root = workflow_copy(tmp_path, preset="tiny", methods=["lst", "lst_fixed_draw"])
    refused = run_snakemake(root, "-n", check=False)
    assert refused.returncode != 0 and "config methods: 'lst_fixed_draw' is not a method" in refused.stderr
    (root / "src/lst/conf/method/lst_fixed_draw.yaml").write_text(METHOD_FILE)
    dry = run_snakemake(root, "-n", "-p").stdout
    stats = dry.split("Job stats")[1]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines() if re.match(r"^\w+\s+\d+$", line)}
    assert counts["train_phase"] == counts["build_replay"] == 2 * 2  # fixed_draw: a stream of its own
    # phase 1's teacher is the base model of both: its logits are extracted once, in lst's folder
    assert counts["extract_logits"] == 1 + 2
    assert "method=lst_fixed_draw" in dry and "results/demo/seed0/lst_fixed_draw/phase2/eval/metrics.parquet" in dry
    phase1 = [line for line in dry.splitlines() if "lst.steps.train_phase" in line and " phase=1 " in line]
    assert len(phase1) == 2 and all("paths.teacher_logits=results/demo/seed0/lst/phase1/teacher_logits.parquet" in line
                                    for line in phase1)  # fmt: skip
    run_snakemake(
        root, "results/demo/seed0/lst_fixed_draw/phase1/replay.parquet", "results/demo/seed0/lst/phase1/replay.parquet"
    )
    logs = root / "results/demo/logs/build_replay"
    assert "(fixed_draw draws" in (logs / "seed0_lst_fixed_draw_phase1.log").read_text()
    assert "(cycle draws" in (logs / "seed0_lst_phase1.log").read_text()


def test_a_loss_variant_shares_the_replay_stream_and_not_the_teacher_of_another_base(tmp_path):
    """lst_seesaw draws its streams as lst does (the same family and settings): one build_replay job per phase
    for both; its phase 1 teacher is its own base model (base_seesaw): logits of its own."""
    root = workflow_copy(tmp_path, preset="tiny", methods=["lst", "lst_seesaw"])
    dry = run_snakemake(root, "-n", "-p").stdout
    stats = dry.split("Job stats")[1]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines() if re.match(r"^\w+\s+\d+$", line)}
    assert (counts["build_replay"], counts["extract_logits"], counts["train_phase"]) == (2, 2 * 2, 2 * 2)
    seesaw = [line for line in dry.splitlines() if "lst.steps.train_phase" in line and "method=lst_seesaw" in line]
    assert len(seesaw) == 2 and all("paths.replay=results/demo/seed0/lst/phase" in line for line in seesaw)


def test_a_config_of_dataset_and_phases_runs_with_the_documented_defaults(tmp_path):
    root = workflow_copy(tmp_path)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    (root / "test.yaml").write_text(yaml.safe_dump({key: config[key] for key in ("dataset", "phases")}))
    dry = run_snakemake(root, "-n", "-p").stdout
    assert "preset=demo" in dry and "method=lst" in dry and "method=joint" in dry and "threads=2" in dry
    assert "results/demo/seed0/finetune/phase2/model.pt" in dry
    # config.yaml says: every key but dataset and phases defaults to the value it shows
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert set(schema["required"]) == {"dataset", "phases"}
    for key, value in config.items():
        if key not in schema["required"]:
            assert schema["properties"][key]["default"] == value, key


def test_lint_is_clean(tmp_path):
    result = run_snakemake(workflow_copy(tmp_path), "--lint", check=False)
    assert result.returncode == 0 and "Lints for" not in result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stderr


def test_bad_json_fails_cleanly_with_no_output(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    out = tmp_path / "data"
    command = step_command("prepare_data", f"dataset.train_json={bad}", f"dataset.val_json={bad}",
                           f"paths.data_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}")  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{bad}: not an LVIS-format file" in result.stdout + result.stderr
    assert "categories" in result.stdout + result.stderr
    assert not out.exists() or not list(out.iterdir())


def test_configured_checkpoint_is_trimmed_before_base_training(tmp_path):
    weights = tmp_path / "coco.pth"
    weights.write_bytes(b"")  # a dry run only needs the file to exist
    root = workflow_copy(tmp_path / "wf", preset="tiny", weights=str(weights))
    dry = run_snakemake(root, "-n", "results/demo/seed0/base/phase0/model.pt").stdout
    stats = dry.split("Job stats")[1]
    assert "trim_weights" in stats and "train_base" in stats
    assert (
        "paths.init=results/demo/weights/init.pt"
        in run_snakemake(root, "-n", "-p", "results/demo/seed0/base/phase0/model.pt").stdout
    )


def test_checkpoint_for_other_classes_is_refused(tiny_run, tmp_path):
    root, _ = tiny_run
    results = root / "results" / "demo"
    model = results / "seed0" / "finetune" / "phase1" / "model.pt"  # 18 classes, evaluated as phase 2 (24)
    command = step_command("evaluate", "phase=2", f"paths.model={model}", f"paths.data_dir={results / 'data'}",
                           f"paths.split_dir={results / 'split'}",
                           f"dataset.image_root={root / 'resources/demo/images'}", f"paths.out_dir={tmp_path / 'eval'}",
                           f"hydra.run.dir={tmp_path / 'hydra'}")  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{model}: trained for other classes than phases 0..2" in result.stdout + result.stderr
    assert not (tmp_path / "eval").exists()


def test_misspelled_hydra_key_is_refused(tiny_run, tmp_path):
    root, _ = tiny_run
    results = root / "results" / "demo"
    command = step_command("split", f"paths.data_dir={results / 'data'}", f"paths.split_dir={tmp_path / 'split'}",
                           "phases.bse=3", f"hydra.run.dir={tmp_path / 'hydra'}")  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode != 0
    assert "bse" in result.stderr
    assert not (tmp_path / "split").exists()


def test_reruns_are_byte_identical(tiny_run):
    """Same config and seed: identical split, replay, teacher-logits files and CPU weights (runs last: it
    leaves the tiny run's downstream outputs older than their inputs)."""
    root, _ = tiny_run
    results = root / "results" / "demo"
    files = [
        results / "split" / "categories.parquet",
        results / "split" / "images.parquet",
        results / "seed0" / "lst" / "phase1" / "replay.parquet",
        results / "seed0" / "lst" / "phase1" / "teacher_logits.parquet",
    ]
    before = {path: path.read_bytes() for path in files}
    weights_before = torch.load(results / "seed0" / "base/phase0/model.pt", weights_only=True)["model"]
    shutil.rmtree(results / "seed0" / "base/phase0/train")  # no resuming: train again from the start
    targets = [str(path.relative_to(root)) for path in files[2:]] + ["results/demo/seed0/base/phase0/model.pt"]
    run_snakemake(root, *targets, "--forcerun", "split", "train_base")
    for path in files:
        assert path.read_bytes() == before[path], path
    weights_after = torch.load(results / "seed0" / "base/phase0/model.pt", weights_only=True)["model"]
    assert all(torch.equal(value, weights_after[key]) for key, value in weights_before.items())


@pytest.mark.parametrize(
    "dataset, num_categories, phases",
    [("lvis_v0.5", 1230, {"base": 270, "step": 160}), ("lvis_v1", 1203, {"base": 363, "step": 140})],
)
def test_paper_dag_dry_run(tmp_path, dataset, num_categories, phases):
    """The LVIS v0.5 (v1) config, given json files with 1,230 (1,203) categories, shows all 7 phases of every method."""
    root = paper_workflow(tmp_path, dataset, num_categories, phases=phases)  # phases counted from the json
    stats = run_snakemake(root, "-n").stdout.split("Job stats")[1].split("Reasons")[0]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines() if re.match(r"^\w+\s+\d+$", line)}
    assert counts["train_phase"] == 2 * 6 and counts["build_replay"] == 2 * 6 and counts["extract_logits"] == 6
    assert counts["train_joint"] == 2 and counts["train_base"] == 1 and counts["trim_weights"] == 1
    assert counts["evaluate"] == 1 + 2 * 6 + 2
