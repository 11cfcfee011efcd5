import pandas as pd
import pytest

from lst.splitting import (
    SplitError,
    frequency_of,
    image_membership,
    phase_sizes,
    phase_summary,
    seen_categories,
    split_categories,
)


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
    split = split_categories(categories, annotations, [2, 2])
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
    with pytest.raises(SplitError, match=message):
        phase_sizes(30, **kwargs)


def test_cumulative_membership_per_phase():
    categories = pd.DataFrame({"category_id": [1, 2, 3], "name": list("abc"), "frequency": "f"})
    train = _annotations({1: [10, 10, 11], 2: [11, 12], 3: [13]})
    split = split_categories(categories, train, [1, 1, 1])
    images = pd.DataFrame({"image_id": [10, 11, 12, 13, 14], "split": "train"})
    membership = image_membership(images, train, split)
    # image 11 holds classes of phases 0 and 1 -> from phase 0; 14 holds nothing
    assert membership["first_phase"].tolist() == [0, 0, 1, 2, pd.NA]
    summary = phase_summary(split, membership)
    assert summary["train_images"].tolist() == [2, 3, 4]
    assert seen_categories(split, 1)["category_id"].tolist() == [1, 2]
