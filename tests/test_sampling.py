import numpy as np
import pandas as pd
import pytest

from lst.sampling import replay_quotas, replay_stream, uniform_stream


@pytest.fixture
def split_and_annotations():
    """Old classes 1 (60 instances in 20 images) and 2 (6 in 6); new classes 3 (10 in 5) and 4 (20 in 10)."""
    rows = []
    rows += [(1, img) for img in range(20) for _ in range(3)]
    rows += [(2, 100 + img) for img in range(6)]
    rows += [(3, 200 + img) for img in range(5) for _ in range(2)]
    rows += [(4, 300 + img) for img in range(10) for _ in range(2)]
    annotations = pd.DataFrame(
        {
            "annotation_id": range(len(rows)),
            "category_id": [c for c, _ in rows],
            "image_id": [i for _, i in rows],
        }
    )
    split = pd.DataFrame(
        {
            "category_id": [1, 2, 3, 4],
            "instance_count": [60, 6, 10, 20],
            "image_count": [20, 6, 5, 10],
            "rank": [1, 2, 3, 4],
            "phase": [0, 0, 1, 1],
        }
    )
    return split, annotations


def test_quotas_by_hand(split_and_annotations):
    split, _ = split_and_annotations
    quotas = replay_quotas(split, 1)
    # m = (10 + 20) / 2 = 15; class 1: 15 / (60 / 20) = 5; class 2: 15 / (6 / 6) = 15
    assert quotas.set_index("category_id")["quota"].to_dict() == {1: 5, 2: 15}


def test_epoch_holds_every_new_pair_and_the_old_quotas(split_and_annotations):
    split, annotations = split_and_annotations
    epoch_size = 5 + 10 + 5 + 15
    stream = replay_stream(split, annotations, 1, iterations=epoch_size, batch_size=1, seed=3)
    first = stream[stream["epoch"] == 0]
    assert len(first) == epoch_size
    counts = first["category_id"].value_counts().to_dict()
    assert counts == {3: 5, 4: 10, 1: 5, 2: 15}
    new_pairs = set(zip(first["image_id"], first["category_id"], strict=True))
    assert {(200 + i, 3) for i in range(5)} | {(300 + i, 4) for i in range(10)} <= new_pairs
    # class 2 has 6 images but a quota of 15: every image is drawn at least twice
    assert first.loc[first["category_id"] == 2, "image_id"].value_counts().min() >= 2
    # an old-class sample shows an image that holds that class
    old = first[first["category_id"] == 1]
    assert old["image_id"].isin(range(20)).all()


def test_determinism_and_variants(split_and_annotations):
    split, annotations = split_and_annotations
    kwargs = dict(iterations=35 * 3, batch_size=1, seed=7)
    a = replay_stream(split, annotations, 1, **kwargs)
    b = replay_stream(split, annotations, 1, **kwargs)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(replay_stream(split, annotations, 1, iterations=105, batch_size=1, seed=8))

    def old_draws(stream, epoch):
        rows = stream[(stream["epoch"] == epoch) & (stream["category_id"] == 1)]
        return sorted(rows["image_id"])

    fixed = replay_stream(split, annotations, 1, variant="fixed", **kwargs)
    assert old_draws(fixed, 0) == old_draws(fixed, 1) == old_draws(fixed, 2)
    assert old_draws(a, 0) != old_draws(a, 1)
    cycle = replay_stream(split, annotations, 1, variant="cycle", **kwargs)
    # 20 images, 5 per epoch: four epochs visit every image once
    cycle4 = replay_stream(split, annotations, 1, variant="cycle", iterations=35 * 4, batch_size=1, seed=7)
    assert sorted(sum((old_draws(cycle4, e) for e in range(4)), [])) == list(range(20))
    assert old_draws(cycle, 0) != old_draws(cycle, 1)


def test_without_replay_only_new_classes(split_and_annotations):
    split, annotations = split_and_annotations
    stream = replay_stream(split, annotations, 1, iterations=40, batch_size=1, old_classes=False)
    assert set(stream["category_id"]) == {3, 4}
    assert (stream[stream["epoch"] == 0]["category_id"].value_counts().to_dict()) == {4: 10, 3: 5}


def test_split_across_ranks(split_and_annotations):
    split, annotations = split_and_annotations
    single = replay_stream(split, annotations, 1, iterations=10, batch_size=4, world_size=1, seed=1)
    double = replay_stream(split, annotations, 1, iterations=5, batch_size=4, world_size=2, seed=1)
    assert len(double) == len(single) == 40
    assert sorted(double["rank"].unique()) == [0, 1]
    # the same global order: iteration t takes samples 8t..8t+7, rank r the r-th block of 4
    for rank in (0, 1):
        own = double[double["rank"] == rank].sort_values("position")
        expected = np.concatenate(
            [single["image_id"].to_numpy()[8 * t + 4 * rank : 8 * t + 4 * rank + 4] for t in range(5)]
        )
        assert own["image_id"].tolist() == expected.tolist()


def test_uniform_stream_visits_every_image_each_epoch():
    stream = uniform_stream(np.arange(10), iterations=5, batch_size=4, seed=0)
    assert len(stream) == 20
    assert sorted(stream[stream["epoch"] == 0]["image_id"]) == list(range(10))
    assert 0 < stream["flip"].mean() < 1


def test_repeat_factors_by_hand():
    from lst.sampling import repeat_factor_stream, repeat_factors

    # class 1 in all four images (f = 1), class 2 in image 10 only (f = 0.25)
    pairs = pd.DataFrame({"image_id": [10, 11, 12, 13, 10], "category_id": [1, 1, 1, 1, 2]})
    factors = repeat_factors(pairs, threshold=1.0)
    assert factors.to_dict() == {10: 2.0, 11: 1.0, 12: 1.0, 13: 1.0}  # r_2 = sqrt(1 / 0.25)
    stream = repeat_factor_stream(factors, iterations=5, batch_size=1)
    assert sorted(stream["image_id"]) == [10, 10, 11, 12, 13]
    fractional = repeat_factors(pairs, threshold=0.5)[10]
    assert fractional == pytest.approx(2**0.5)
