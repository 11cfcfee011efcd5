import numpy as np
import pandas as pd
import pytest

from lst.data.sampling import (
    _grouped_rows,
    aspect_groups,
    per_process_batch,
    phase_seed,
    replay_epoch,
    replay_quotas,
    replay_stream,
    uniform_stream,
)
from lst.errors import ConfigError, SamplingError


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

    fixed = replay_stream(split, annotations, 1, variant="fixed_draw", **kwargs)
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
    from lst.data.sampling import repeat_factor_stream, repeat_factors

    # class 1 in all four images (f = 1), class 2 in image 10 only (f = 0.25)
    pairs = pd.DataFrame({"image_id": [10, 11, 12, 13, 10], "category_id": [1, 1, 1, 1, 2]})
    factors = repeat_factors(pairs, threshold=1.0)
    assert factors.to_dict() == {10: 2.0, 11: 1.0, 12: 1.0, 13: 1.0}  # r_2 = sqrt(1 / 0.25)
    stream = repeat_factor_stream(factors, iterations=5, batch_size=1)
    assert sorted(stream["image_id"]) == [10, 10, 11, 12, 13]
    fractional = repeat_factors(pairs, threshold=0.5)[10]
    assert fractional == pytest.approx(2**0.5)


def _class_draws(stream: pd.DataFrame, category_id: int, epochs: int) -> list[list[int]]:
    """Per epoch, the images a class's samples show (sorted)."""
    rows = stream[stream["category_id"] == category_id]
    return [sorted(rows.loc[rows["epoch"] == e, "image_id"]) for e in range(epochs)]


def test_quota_rounding_by_hand():
    # m = (4 + 6) / 2 = 5; class 1: 5 / (20 / 10) = 2.5; class 2: 5 / (2 / 2) = 5; class 5: 5 / (10 / 1) = 0.5
    split = pd.DataFrame(
        {
            "category_id": [1, 2, 5, 3, 4],
            "instance_count": [20, 2, 10, 4, 6],
            "image_count": [10, 2, 1, 4, 6],
            "rank": [1, 2, 3, 4, 5],
            "phase": [0, 0, 0, 1, 1],
        }
    )
    half_even = replay_quotas(split, 1, "half_even").set_index("category_id")["quota"].to_dict()
    half_up = replay_quotas(split, 1, "half_up").set_index("category_id")["quota"].to_dict()
    assert half_even == {1: 2, 2: 5, 5: 1}  # 2.5 -> 2 (numpy's round, the notebooks'); 0.5 -> 0 -> at least 1
    assert half_up == {1: 3, 2: 5, 5: 1}
    pd.testing.assert_frame_equal(replay_quotas(split, 1), replay_quotas(split, 1, "half_even"))
    with pytest.raises(ValueError, match="'nearest' is not a valid QuotaRounding"):  # lst.conf.schema's choices
        replay_quotas(split, 1, "nearest")


def test_cycle_walks_one_shuffled_list_per_class(split_and_annotations):
    split, annotations = split_and_annotations
    # class 1: 20 images, 5 per epoch; epoch e takes block e of one walk, so 4 epochs cover it once
    stream = replay_stream(split, annotations, 1, iterations=35 * 5, batch_size=1, seed=5, variant="cycle")
    draws = _class_draws(stream, 1, 5)
    assert sorted(sum(draws[:4], [])) == list(range(20))
    assert draws[4] == draws[0]  # the walk wraps around: the same list, not a reshuffled one
    # class 2: 6 images, 15 per epoch: positions 0..14 of the walk, so every image 2 or 3 times
    counts = stream[(stream["epoch"] == 0) & (stream["category_id"] == 2)]["image_id"].value_counts()
    assert sorted(counts) == [2, 2, 2, 3, 3, 3]


def test_with_replacement_repeats_images_and_is_keyed_by_epoch(split_and_annotations):
    split, annotations = split_and_annotations
    kwargs = dict(batch_size=1, seed=5, variant="with_replacement", remainder="next_epoch")
    stream = replay_stream(split, annotations, 1, iterations=35 * 10, **kwargs)
    draws = _class_draws(stream, 1, 10)
    assert all(len(d) == 5 and set(d) <= set(range(20)) for d in draws)
    # 5 draws from 20 images repeat one with probability 0.42 per epoch: some of 10 epochs do
    assert any(len(set(d)) < 5 for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    # an epoch's draws depend on (seed, epoch) only, not on how long the stream is
    shorter = replay_stream(split, annotations, 1, iterations=35 * 3, **kwargs)
    assert _class_draws(shorter, 1, 3) == draws[:3]
    without = replay_stream(split, annotations, 1, iterations=35 * 10, **{**kwargs, "variant": "without_replacement"})
    assert all(len(set(d)) == 5 for d in _class_draws(without, 1, 10))


def test_without_replacement_draws_distinct_images_afresh(split_and_annotations):
    split, annotations = split_and_annotations
    kwargs = dict(iterations=35 * 4, batch_size=1, seed=2, variant="without_replacement")
    stream = replay_stream(split, annotations, 1, **kwargs)
    draws = _class_draws(stream, 1, 4)
    assert all(len(set(d)) == 5 for d in draws)
    assert len({tuple(d) for d in draws}) == 4
    # quota 15 over 6 images: whole permutations chained, so every image 2 or 3 times
    counts = stream[(stream["epoch"] == 0) & (stream["category_id"] == 2)]["image_id"].value_counts()
    assert sorted(counts) == [2, 2, 2, 3, 3, 3]


def test_fixed_draw_keeps_the_images_but_reshuffles_the_epoch(split_and_annotations):
    split, annotations = split_and_annotations
    stream = replay_stream(split, annotations, 1, iterations=35 * 3, batch_size=1, seed=2, variant="fixed_draw")
    draws = _class_draws(stream, 1, 3)
    assert draws[0] == draws[1] == draws[2]
    order = [stream.loc[stream["epoch"] == e, ["image_id", "category_id"]].to_numpy().tolist() for e in range(2)]
    assert sorted(order[0]) == sorted(order[1]) and order[0] != order[1]


def test_phase_seed_is_the_run_seed_offset_per_phase():
    """build_replay and train_phase seed phase k with it: seed + 1000 k, as every run so far."""
    assert [phase_seed(7, phase) for phase in range(3)] == [7, 1007, 2007]


def test_unknown_variant_is_refused(split_and_annotations):
    """By lst.conf.schema.ReplayVariant (a config's value is refused when it is composed, tests/test_bad_input.py)."""
    split, annotations = split_and_annotations
    with pytest.raises(ValueError, match="'rand_balanced' is not a valid ReplayVariant"):
        replay_stream(split, annotations, 1, iterations=10, batch_size=1, variant="rand_balanced")


def test_remainder_is_the_last_epoch_unshuffled(split_and_annotations):
    """The notebooks: floor(budget / epoch) shuffled epochs, then the head of the last one's unshuffled pairs."""
    split, annotations = split_and_annotations
    stream = replay_stream(split, annotations, 1, iterations=35 * 2 + 20, batch_size=1, seed=4)
    assert stream["epoch"].tolist() == [0] * 35 + [1] * 35 + [1] * 20
    tail = stream.iloc[70:][["image_id", "category_id"]].values.tolist()
    # epoch 1's pairs in their built order: class 3's images, class 4's, then the old-class draws
    assert tail == [[200 + i, 3] for i in range(5)] + [[300 + i, 4] for i in range(10)] + tail[15:]
    quotas = replay_quotas(split, 1)
    images_of = {1: np.arange(20), 2: np.arange(100, 106), 3: np.arange(200, 205), 4: np.arange(300, 310)}
    new_pairs = pd.DataFrame({"image_id": [*range(200, 205), *range(300, 310)], "category_id": [3] * 5 + [4] * 10})
    epoch1 = replay_epoch(new_pairs, quotas, images_of, 1, 4, "cycle", shuffled=False)
    assert tail == epoch1.head(20).values.tolist()
    shuffled = replay_epoch(new_pairs, quotas, images_of, 1, 4, "cycle")
    assert stream.iloc[35:70][["image_id", "category_id"]].values.tolist() == shuffled.values.tolist()


def test_next_epoch_remainder_and_short_budgets(split_and_annotations):
    split, annotations = split_and_annotations
    following = replay_stream(split, annotations, 1, iterations=90, batch_size=1, seed=4, remainder="next_epoch")
    longer = replay_stream(split, annotations, 1, iterations=105, batch_size=1, seed=4, remainder="next_epoch")
    assert following["epoch"].tolist() == [0] * 35 + [1] * 35 + [2] * 20
    pd.testing.assert_frame_equal(following[["image_id", "category_id"]], longer[["image_id", "category_id"]].head(90))
    # a budget under one epoch takes the head of the shuffled epoch 0, whatever the remainder rule
    short = replay_stream(split, annotations, 1, iterations=20, batch_size=1, seed=4)
    pairs = ["image_id", "category_id"]
    assert short[pairs].values.tolist() == longer.head(20)[pairs].values.tolist()
    with pytest.raises(ValueError, match="'shuffled' is not a valid Remainder"):  # lst.conf.schema
        replay_stream(split, annotations, 1, iterations=20, batch_size=1, remainder="shuffled")


def test_grouped_rows_by_hand():
    # group 0 rows 0, 3, 4, 6 make batches [0, 3] (complete at row 3) and [4, 6] (row 6); group 1 rows
    # 1, 2, 5, 7 make [1, 2] (row 2) and [5, 7] (row 7): they come out in the order they complete
    groups = np.array([0, 1, 1, 0, 0, 1, 0, 1])
    assert _grouped_rows(groups, 2, 3).tolist() == [1, 2, 0, 3, 4, 6]
    assert _grouped_rows(np.zeros(7, np.int64), 3, 2).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(SamplingError, match="3 needed"):
        _grouped_rows(groups, 3, 3)


def _images(portrait_ids, landscape_ids) -> pd.DataFrame:
    ids = [*portrait_ids, *landscape_ids]
    return pd.DataFrame(
        {"image_id": ids, "width": [30] * len(portrait_ids) + [40] * len(landscape_ids), "height": [30] * len(ids)}
    )


def test_aspect_groups_follow_maskrcnn_benchmark():
    groups = aspect_groups(pd.DataFrame({"image_id": [1, 2, 3], "width": [640, 480, 500], "height": [480, 640, 500]}))
    assert groups.to_dict() == {1: 0, 2: 1, 3: 1}  # height / width >= 1: group 1 (bisect_right([1], ratio))


def test_one_aspect_group_leaves_the_stream_unchanged(split_and_annotations):
    split, annotations = split_and_annotations
    square = aspect_groups(_images(range(400), []))
    kwargs = dict(iterations=13, batch_size=4, world_size=2, seed=3)
    pd.testing.assert_frame_equal(
        replay_stream(split, annotations, 1, **kwargs, groups=square), replay_stream(split, annotations, 1, **kwargs)
    )
    images = np.arange(1, 24)
    pd.testing.assert_frame_equal(uniform_stream(images, **kwargs, groups=square), uniform_stream(images, **kwargs))


@pytest.mark.parametrize("world_size", [1, 2])
def test_aspect_grouped_batches(split_and_annotations, world_size):
    split, annotations = split_and_annotations
    landscape = [*range(0, 20, 2), *range(100, 106, 3), 200, 201, *range(300, 310, 4)]
    groups = aspect_groups(_images(sorted(set(range(400)) - set(landscape)), landscape))
    kwargs = dict(batch_size=3, world_size=world_size, seed=6, remainder="next_epoch")
    stream = replay_stream(split, annotations, 1, iterations=24 // world_size, **kwargs, groups=groups)
    assert len(stream) == 24 * 3
    again = replay_stream(split, annotations, 1, iterations=24 // world_size, **kwargs, groups=groups)
    pd.testing.assert_frame_equal(stream, again)
    assert sorted(stream["rank"].unique()) == list(range(world_size))
    for rank in range(world_size):
        own = stream[stream["rank"] == rank].sort_values("position")
        assert own["position"].tolist() == list(range(len(own)))
        batch_groups = own["image_id"].map(groups).to_numpy().reshape(-1, 3)
        assert (batch_groups == batch_groups[:, :1]).all()  # one aspect group per batch
    # the batches GroupedBatchSampler cuts from the ungrouped sequence (here a longer stream, whose head it
    # is), in the order they complete
    sequence = _global_order(replay_stream(split, annotations, 1, iterations=28 // world_size, **kwargs), 3)
    rows = _grouped_rows(sequence["image_id"].map(groups).to_numpy(), 3, 24)
    expected = sequence[["image_id", "category_id", "epoch"]].iloc[rows].reset_index(drop=True)
    pd.testing.assert_frame_equal(_global_order(stream, 3)[["image_id", "category_id", "epoch"]], expected)


def _global_order(stream: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """A stream's samples in global order: iteration by iteration, rank by rank."""
    iteration = stream["position"] // batch_size
    return stream.assign(iteration=iteration).sort_values(["iteration", "rank", "position"]).reset_index(drop=True)


def test_missing_image_size_is_refused():
    groups = aspect_groups(_images([1, 2], [3]))
    with pytest.raises(SamplingError, match="no width and height"):
        uniform_stream(np.arange(1, 6), iterations=2, batch_size=2, groups=groups)


def test_the_global_batch_splits_evenly_across_processes_or_is_refused():
    assert per_process_batch(16, 8, "train_phase.batch_size") == 2
    assert per_process_batch(8, 1, "train_base.batch_size") == 8
    with pytest.raises(ConfigError, match=r"^train_base\.batch_size: 8 images .* across 3 training process"):
        per_process_batch(8, 3, "train_base.batch_size")
