"""What a dry run catches before any job: phases that need more classes than the train json has, an image
folder that does not exist (when a job reads images: annotation-only targets need none), and the demo's toy
preset on another dataset (a warning)."""

import json

import pytest
from workflow_copy import configure, run_snakemake, workflow_copy


def coco_like(root, num_categories=80, image_root="images"):
    """The dataset config of json files of ``num_categories`` categories (no images) written in ``root``."""
    categories = [{"id": i, "name": f"c{i}"} for i in range(1, num_categories + 1)]
    for name in ("train", "val"):
        (root / f"{name}.json").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.json").write_text(json.dumps({"images": [], "annotations": [], "categories": categories}))
    (root / "images").mkdir(exist_ok=True)
    dataset = {"name": "coco", "train_json": "train.json", "val_json": "val.json", "image_root": image_root}
    return dataset


@pytest.fixture
def root(tmp_path):
    return workflow_copy(tmp_path)


def refusal(root, **config) -> str:
    result = run_snakemake(configure(root, **config), "-n", check=False)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Job stats" not in result.stdout + result.stderr  # refused while the DAG is built: no job planned
    assert not (root / "results").exists()
    return result.stderr


def test_phases_that_need_more_classes_than_the_json_has_are_refused(root):
    dataset = coco_like(root)
    phases = {"base": 40, "step": 20, "num_incremental": 3}  # 100 classes of COCO's 80
    assert "lst: phases.base/step/num_incremental: phase 3 would have 0 classes: a phase needs at least one class; " \
           "train.json has 80 categories" in refusal(root, dataset=dataset, phases=phases)  # fmt: skip
    assert "lst: phases.sizes need 81 classes ([41, 40]) but the dataset has 80; train.json has 80 categories" in (
        refusal(root, dataset=dataset, phases={"sizes": [41, 40]})
    )


@pytest.mark.parametrize(
    "image_root, message",
    [
        ("photos", "lst: dataset.image_root: photos: no such folder (the images are read from it)"),
        ({"train": "images", "val": "val2017"}, "lst: dataset.image_root.val: val2017: no such folder"),
    ],
)
def test_a_missing_image_folder_is_refused_by_name(root, image_root, message):
    dataset = coco_like(root, image_root=image_root)
    assert message in refusal(root, dataset=dataset, phases={"sizes": [40, 20]}, preset="photo_cpu")


def test_the_demo_preset_on_another_dataset_gets_a_warning_naming_the_presets_to_use(root):
    dataset = coco_like(root)
    warned = run_snakemake(configure(root, dataset=dataset, phases={"sizes": [40, 20]}), "-n")
    assert "lst: warning: preset demo is the demo's 128 px toy model, for the embedded demo data, but " \
           "dataset.train_json is train.json: for real photographs give preset: photo_cpu" in warned.stderr  # fmt: skip
    quiet = run_snakemake(configure(root, dataset=dataset, phases={"sizes": [40, 20]}, preset="photo_cpu"), "-n")
    assert "lst: warning" not in quiet.stderr
    assert "lst: warning" not in run_snakemake(configure(root), "-n").stderr  # the demo itself
