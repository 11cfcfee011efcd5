import numpy as np
import pandas as pd
import pytest
from conftest import step_command

from lst.data.phase_plan import (
    frequency_of,
    image_membership,
    phase_count,
    phase_sizes,
    phase_summary,
    plan_phases,
    seen_categories,
)
from lst.errors import PhasePlanError


def _annotations(counts: dict[int, list[int]]) -> pd.DataFrame:
    """category -> list of image ids, one annotation each."""
    rows = [(c, img) for c, images in counts.items() for img in images]
    return pd.DataFrame(
        {
            "annotation_id": range(len(rows)),
            "category_id": [c for c, _ in rows],
            "image_id": [i for _, i in rows],
        }
    )


def test_sorts_by_instances_descending_ties_by_id_and_assigns_phases():
    categories = pd.DataFrame({"category_id": [5, 3, 9, 1, 7], "name": list("abcde"), "frequency": ""})
    # instances: 5 -> 3, 3 -> 1, 9 -> 3, 1 -> 2, 7 -> 0
    annotations = _annotations({5: [1, 1, 2], 3: [2], 9: [3, 4, 5], 1: [1, 6]})
    split = plan_phases(categories, annotations, [2, 2])
    assert split["category_id"].tolist() == [5, 9, 1, 3, 7]
    assert split["rank"].tolist() == [1, 2, 3, 4, 5]
    assert split["phase"].tolist() == [0, 0, 1, 1, -1]
    assert split["instance_count"].tolist() == [3, 3, 2, 1, 0]
    assert split["image_count"].tolist() == [2, 3, 2, 1, 0]


def test_lvis_frequency_rule_on_image_counts():
    assert frequency_of(pd.Series([1, 10, 11, 100, 101]).to_numpy()).tolist() == ["r", "r", "c", "c", "f"]


def test_phase_sizes():
    assert phase_sizes(1230, base=270, step=160) == [270] + [160] * 6
    assert phase_sizes(1203, base=203, step=200) == [203] + [200] * 5
    assert phase_sizes(30, base=10, step=8) == [10, 8, 8, 4]
    assert phase_sizes(30, base=10, step=5, num_incremental=2) == [10, 5, 5]
    assert phase_sizes(30, sizes=[10, 20]) == [10, 20]


def test_phase_count_is_the_split_s_and_counts_categories_only_when_it_must():
    """The workflow's K (at DAG build time, from the train json) and the split step's phases: one rule."""

    def uncounted() -> int:
        raise AssertionError("the categories were counted")

    assert phase_count({"sizes": [12, 6, 6], "base": 3, "step": 1}, uncounted) == 2  # sizes wins
    assert phase_count({"base": 12, "step": 6, "num_incremental": 2, "sizes": None}, uncounted) == 2
    for num, phases in [
        (1230, {"base": 270, "step": 160}),
        (30, {"base": 10, "step": 8}),
        (24, {"base": 12, "step": 6}),
    ]:
        assert phase_count(phases, lambda num=num: num) == len(phase_sizes(num, **phases)) - 1
    assert phase_count({"base": 270, "step": 160}, lambda: 1230) == 6
    with pytest.raises(PhasePlanError, match="phases.step = 0"):
        phase_count({"base": 2, "step": 0}, lambda: 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base": 31, "step": 5}, "larger than the number of classes"),
        ({"sizes": [10, 0, 5]}, "phase 1 would have 0 classes"),
        ({"sizes": [20, 20]}, "the dataset has 30"),
        ({"base": 10}, "give either"),
    ],
)
def test_phase_size_errors(kwargs, message):
    with pytest.raises(PhasePlanError, match=message):
        phase_sizes(30, **kwargs)


def test_cumulative_membership_per_phase():
    categories = pd.DataFrame({"category_id": [1, 2, 3], "name": list("abc"), "frequency": "f"})
    train = _annotations({1: [10, 10, 11], 2: [11, 12], 3: [13]})
    split = plan_phases(categories, train, [1, 1, 1])
    images = pd.DataFrame({"image_id": [10, 11, 12, 13, 14], "split": "train"})
    membership = image_membership(images, train, split)
    # image 11 holds classes of phases 0 and 1 -> from phase 0; 14 holds nothing
    assert membership["first_phase"].tolist() == [0, 0, 1, 2, pd.NA]
    summary = phase_summary(split, membership)
    assert summary["train_images"].tolist() == [2, 3, 4]
    assert seen_categories(split, 1)["category_id"].tolist() == [1, 2]


# docs/method.md section 1: the f/c/r mix of LVIS v0.5's 270 + 6 x 160 split, phase by phase
LVIS_V05_MIX = [(246, 24, 0), (65, 90, 5), (4, 144, 12), (0, 128, 32), (0, 75, 85), (0, 0, 160), (0, 0, 160)]


def _lvis_v05_like(data_dir):
    """Tables of 1,230 classes whose instance order and LVIS frequency rule give LVIS_V05_MIX.

    The class at rank r (1-based) gets 1232 - r training instances, strictly descending; its training
    image count follows its intended group (f: 101-500, c: 11-100, r: 1-10 images, never more than its
    instances). Category ids are shuffled so that id order is not rank order. Each phase's classes use
    their own images (1,000 ids per phase), so cumulative image counts grow phase by phase; every class
    has one val annotation.
    """
    from lst.data import tables

    groups = np.array([g for mix in LVIS_V05_MIX for g, n in zip("fcr", mix, strict=True) for _ in range(n)])
    rank = np.arange(1, len(groups) + 1)
    instances = 1232 - rank
    images = np.select([groups == "f", groups == "c"], [101 + rank % 400, 11 + rank % 90], 1 + rank % 10)
    images = np.minimum(images, instances)
    phase = np.searchsorted(np.cumsum([270] + [160] * 6), rank - 1, side="right")
    category_ids = np.random.default_rng(0).permutation(len(groups)) + 1
    train_category = np.repeat(category_ids, instances)
    within = np.arange(len(train_category)) - np.repeat(np.cumsum(instances) - instances, instances)
    train_image = np.repeat(1000 * phase, instances) + within % np.repeat(images, instances)
    val_image = 10**6 + phase
    annotations = pd.DataFrame(
        {
            "annotation_id": np.arange(len(train_category) + len(groups)),
            "image_id": np.concatenate([train_image, val_image]),
            "split": ["train"] * len(train_category) + ["val"] * len(groups),
            "category_id": np.concatenate([train_category, category_ids]),
            "x": 1.0, "y": 1.0, "w": 4.0, "h": 4.0, "area": 16.0, "iscrowd": False,
            "segmentation": "[[1,1,5,1,5,5]]",
        }
    )  # fmt: skip
    image_ids = np.unique(annotations["image_id"])
    images_table = pd.DataFrame(
        {
            "image_id": image_ids,
            "split": np.where(image_ids >= 10**6, "val", "train"),
            "width": 20, "height": 20, "file_name": "x.jpg",
            "neg_category_ids": [[] for _ in image_ids], "not_exhaustive_category_ids": [[] for _ in image_ids],
        }
    )  # fmt: skip
    categories = pd.DataFrame({"category_id": category_ids, "name": [f"c{i}" for i in category_ids], "frequency": ""})
    tables.write_table(images_table, data_dir / "images.parquet", tables.IMAGES)
    tables.write_table(annotations, data_dir / "annotations.parquet", tables.ANNOTATIONS)
    tables.write_table(categories, data_dir / "categories.parquet", tables.CATEGORIES)
    return groups, instances, phase


def test_split_step_reports_the_papers_lvis_v05_mix(tmp_path):
    """The split step, run as the workflow runs it, sizes the phases 270 + 6 x 160 and reports docs/method.md's mix."""
    import subprocess

    from lst.data import tables

    data_dir, split_dir = tmp_path / "data", tmp_path / "split"
    groups, instances, phase = _lvis_v05_like(data_dir)
    command = step_command("split", f"paths.data_dir={data_dir}", f"paths.split_dir={split_dir}", "phases.base=270",
                           "phases.step=160", "phases.num_incremental=6",
                           f"hydra.run.dir={tmp_path / 'hydra'}")  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    phases = tables.read_table(split_dir / "phases.parquet", tables.PHASES)
    assert phases["num_classes"].tolist() == [270] + [160] * 6
    assert list(zip(phases["f"], phases["c"], phases["r"], strict=True)) == LVIS_V05_MIX
    assert phases["first_rank"].tolist() == [1, 271, 431, 591, 751, 911, 1071]
    assert phases["instances"].tolist() == [int(instances[phase == k].sum()) for k in range(7)]
    assert phases["max_instances"].tolist() == [1231, 961, 801, 641, 481, 321, 161]
    assert phases["min_instances"].tolist() == [962, 802, 642, 482, 322, 162, 2]
    assert phases["val_instances"].tolist() == [270] + [160] * 6
    assert phases["val_images"].tolist() == [1, 2, 3, 4, 5, 6, 7]  # cumulative: one val image per phase
    assert phases["train_images"].is_monotonic_increasing
    # the LVIS rule on training image counts reproduces the intended groups, class by class
    split = tables.read_table(split_dir / "categories.parquet", tables.PHASE_PLAN)
    assert split["frequency"].tolist() == groups.tolist()
    assert split["phase"].tolist() == phase.tolist()

    report = (split_dir / "phases.md").read_text().splitlines()
    assert len(report) == 2 + 7
    assert report[2].startswith("| 0 | 270 | 1-270 | 246 / 24 / 0 | ")
    assert report[8].startswith("| 6 | 160 | 1071-1230 | 0 / 0 / 160 | ")
