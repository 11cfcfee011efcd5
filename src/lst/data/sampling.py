"""Sample streams: which (image, target class, flip) each training iteration of each process sees.

``uniform_stream`` serves the base phase and joint training (every image once per epoch).
``replay_stream`` is LST's instance-level balanced replay (docs/method.md section 4): each epoch holds every
(image, new class) pair plus n_c (image, c) pairs per old class c, with
n_c = max(1, round(m / (instances_c / images_c))) and m the mean training instance count of the new
classes, so each old class contributes about as many instances per epoch as an average new class.
Without replay (``old_classes=False``) an epoch holds the new-class pairs only.

Old-class draws (``VARIANTS``), after the released notebooks:
- ``cycle``: each class's images shuffled once, walked in consecutive blocks of n_c across epochs
  (the README-linked balanced_replay.ipynb);
- ``with_replacement``: n_c draws with replacement, from a generator keyed by the epoch
  (indices_genration.ipynb's torch.randint);
- ``without_replacement``: n_c distinct images per epoch (fresh permutations chained past the pool);
- ``fixed_draw``: the without-replacement draw of epoch 0 in every epoch (only the epoch order changes).

Optionally (``groups``) each process's batch of an iteration holds images of one aspect group, as
torchvision's GroupedBatchSampler and maskrcnn-benchmark's ASPECT_RATIO_GROUPING make it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from lst.conf.schema import QuotaRounding, Remainder, ReplayVariant, choices
from lst.errors import ConfigError, SamplingError

VARIANTS = choices(ReplayVariant)
QUOTA_ROUNDINGS = choices(QuotaRounding)  # numpy's round (the notebooks') or floor(x + 0.5)
# after the whole epochs: the last of them again, unshuffled (the notebooks'), or a further shuffled epoch
REMAINDERS = choices(Remainder)
NO_TARGET = 0  # category_id of a sample that has no target class (base and joint training)


def phase_seed(seed: int, phase: int) -> int:
    """The seed of phase ``phase`` of a run seeded ``seed``: its replay stream and its training draw from it."""
    return seed + 1000 * phase


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def per_process_batch(batch_size: int, processes: int, key: str) -> int:
    """The images per process and iteration of the global batch ``batch_size`` (config ``key``) split across
    ``processes`` training processes; a batch that does not split evenly is refused."""
    if processes < 1 or batch_size % processes:
        raise ConfigError(
            f"{key}: {batch_size} images per iteration (the global batch) do not split evenly across {processes} "
            f"training process(es); give a multiple of {processes}"
        )
    return batch_size // processes


def _check_budget(section: str, iterations: int, batch_size: int, flip_prob: float) -> None:
    """A training section's (train_base, train_phase) stream settings."""
    for key, value in (("iterations", iterations), ("batch_size", batch_size)):
        if value < 1:
            raise SamplingError(f"{section}.{key}: {value}; a stream needs at least 1")
    if not 0 <= flip_prob <= 1:
        raise SamplingError(f"{section}.flip_prob: {flip_prob} is not a probability")


def replay_quotas(plan: pd.DataFrame, phase: int, rounding: str = "half_even") -> pd.DataFrame:
    """Old classes of ``phase`` with their per-epoch image quota n_c (column ``quota``)."""
    half_even = QuotaRounding(rounding) is QuotaRounding.half_even  # a config's value is checked when composed
    new = plan[plan["phase"] == phase]
    if new.empty:
        raise SamplingError(f"phase: phase {phase} has no classes")
    mean_new_instances = new["instance_count"].mean()
    old = plan[(plan["phase"] >= 0) & (plan["phase"] < phase) & (plan["image_count"] > 0)]
    old = old.sort_values("rank")[["category_id", "rank", "instance_count", "image_count"]].copy()
    ratio = mean_new_instances / (old["instance_count"] / old["image_count"])
    rounded = np.round(ratio) if half_even else np.floor(ratio + 0.5)
    old["quota"] = np.maximum(1, rounded).astype(np.int64)
    return old.reset_index(drop=True)


def _images_by_class(annotations: pd.DataFrame, category_ids) -> dict[int, np.ndarray]:
    wanted = annotations[annotations["category_id"].isin(category_ids)]
    pairs = wanted[["category_id", "image_id"]].drop_duplicates()
    return {int(c): np.sort(g["image_id"].to_numpy(np.int64)) for c, g in pairs.groupby("category_id")}


def _draw(images: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` images without replacement; beyond the pool, fresh permutations are chained."""
    chunks, left = [], count
    while left > 0:
        take = min(left, len(images))
        chunks.append(rng.permutation(images)[:take])
        left -= take
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def _old_class_images(
    quotas: pd.DataFrame, images_of: dict[int, np.ndarray], epoch: int, seed: int, variant: str
) -> list[np.ndarray]:
    """Per old class (in ``quotas`` order), the images it replays in ``epoch``."""
    kind = ReplayVariant(variant)  # a config's value is checked when it is composed
    draw_rng = _rng(seed, 0 if kind is ReplayVariant.fixed_draw else epoch, 1)
    chosen = []
    for row in quotas.itertuples():
        pool, quota = images_of[int(row.category_id)], int(row.quota)
        if kind is ReplayVariant.cycle:
            walk = _rng(seed, 2, row.category_id).permutation(pool)  # shuffled once, whatever the epoch
            chosen.append(walk[np.arange(epoch * quota, (epoch + 1) * quota) % len(walk)])
        elif kind is ReplayVariant.with_replacement:
            chosen.append(pool[draw_rng.integers(0, len(pool), quota)])
        else:
            chosen.append(_draw(pool, quota, draw_rng))
    return chosen


def replay_epoch(
    new_pairs: pd.DataFrame,
    quotas: pd.DataFrame,
    images_of: dict[int, np.ndarray],
    epoch: int,
    seed: int,
    variant: str,
    shuffled: bool = True,
) -> pd.DataFrame:
    """One epoch of (image_id, category_id) pairs: the new-class pairs, then the old-class draws, shuffled."""
    old_images = _old_class_images(quotas, images_of, epoch, seed, variant)
    old_classes = [np.full(len(d), c, np.int64) for d, c in zip(old_images, quotas["category_id"], strict=True)]
    image_ids = np.concatenate([new_pairs["image_id"].to_numpy(np.int64), *old_images])
    category_ids = np.concatenate([new_pairs["category_id"].to_numpy(np.int64), *old_classes])
    order = _rng(seed, epoch, 3).permutation(len(image_ids)) if shuffled else np.arange(len(image_ids))
    return pd.DataFrame({"image_id": image_ids[order], "category_id": category_ids[order]})


def _assign_ranks(stream: pd.DataFrame, batch_size: int, world_size: int) -> pd.DataFrame:
    """Global sample i: iteration i // (b * W); within it, rank j // b takes it at position t * b + j % b."""
    index = np.arange(len(stream))
    global_batch = batch_size * world_size
    iteration, within = np.divmod(index, global_batch)
    stream = stream.copy()
    stream["rank"] = (within // batch_size).astype(np.int32)
    stream["position"] = (iteration * batch_size + within % batch_size).astype(np.int64)
    return stream


def _epochs(make_epoch: Callable[[int], pd.DataFrame], num_samples: int) -> list[pd.DataFrame]:
    """Epochs 0, 1, ... (each tagged with its number) until they hold ``num_samples`` samples."""
    epochs, total = [], 0
    while total < num_samples:
        pairs = make_epoch(len(epochs))
        if pairs.empty:
            raise SamplingError("an epoch has no samples")
        epochs.append(pairs.assign(epoch=len(epochs)))
        total += len(pairs)
    return epochs


def _unshuffled_remainder(make_epoch: Callable[[int, bool], pd.DataFrame], budget: int, length: int) -> pd.DataFrame:
    """The notebooks' layout: floor(budget / epoch size) shuffled epochs (at least one), then the last of
    them again unshuffled (new-class pairs in class order first), repeated as far as ``length`` needs."""
    first = make_epoch(0, True)
    if first.empty:
        raise SamplingError("an epoch has no samples")
    whole = max(1, budget // len(first))
    epochs = [first.assign(epoch=0)] + [make_epoch(e, True).assign(epoch=e) for e in range(1, whole)]
    missing = length - whole * len(first)
    if missing > 0:
        tail = make_epoch(whole - 1, False).assign(epoch=whole - 1)
        epochs += [tail] * -(-missing // len(tail))
    return pd.concat(epochs, ignore_index=True).iloc[:length]


def _sequence(
    make_epoch: Callable[[int, bool], pd.DataFrame], budget: int, length: int, remainder: str
) -> pd.DataFrame:
    """``length`` samples of epochs in a row (``length`` >= ``budget``, the stream's own size)."""
    if Remainder(remainder) is Remainder.last_epoch_unshuffled:
        return _unshuffled_remainder(make_epoch, budget, length)
    return pd.concat(_epochs(lambda epoch: make_epoch(epoch, True), length), ignore_index=True).iloc[:length]


def aspect_groups(images: pd.DataFrame) -> pd.Series:
    """maskrcnn-benchmark's aspect groups (boundary 1): 1 where height / width >= 1, else 0; by image_id."""
    portrait = (images["height"].to_numpy() >= images["width"].to_numpy()).astype(np.int8)
    return pd.Series(portrait, index=images["image_id"].to_numpy(np.int64))


def _grouped_rows(groups: np.ndarray, batch_size: int, num_batches: int) -> np.ndarray:
    """Rows of the first ``num_batches`` batches that GroupedBatchSampler makes of a sequence: each group's
    rows, in order, cut into batches of ``batch_size``; a batch comes out when its last row arrives."""
    blocks = []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        blocks.append(rows[: len(rows) // batch_size * batch_size].reshape(-1, batch_size))
    blocks = np.concatenate(blocks)
    if len(blocks) < num_batches:
        raise SamplingError(f"{len(blocks)} aspect-grouped batches, {num_batches} needed")
    return blocks[np.argsort(blocks[:, -1], kind="stable")[:num_batches]].ravel()


def _stream(
    make_sequence: Callable[[int], pd.DataFrame],
    budget: tuple[int, int, int],
    seed: int,
    flip_prob: float,
    groups: pd.Series | None,
) -> pd.DataFrame:
    """The stream of ``budget`` = (iterations, batch_size, world_size) from a sequence of samples, each
    process's batches aspect-grouped when ``groups`` (image_id -> group) is given."""
    iterations, batch_size, world_size = budget
    num_samples = iterations * batch_size * world_size
    if groups is None:
        stream = make_sequence(num_samples).reset_index(drop=True)
    else:
        # a group's buffer can end up to batch_size - 1 samples short: enough spare samples for every group
        sequence = make_sequence(num_samples + (batch_size - 1) * groups.nunique()).reset_index(drop=True)
        sample_groups = sequence["image_id"].map(groups)
        if sample_groups.isna().any():
            raise SamplingError("an image of the stream has no width and height in the images table")
        rows = _grouped_rows(sample_groups.to_numpy(np.int64), batch_size, iterations * world_size)
        stream = sequence.iloc[rows].reset_index(drop=True)
    stream["flip"] = _rng(seed, 4).random(len(stream)) < flip_prob
    stream = _assign_ranks(stream, batch_size, world_size)
    stream["epoch"] = stream["epoch"].astype(np.int32)
    return stream[["epoch", "rank", "position", "image_id", "category_id", "flip"]]


def replay_stream(
    plan: pd.DataFrame,
    train_annotations: pd.DataFrame,
    phase: int,
    iterations: int,
    batch_size: int,
    world_size: int = 1,
    seed: int = 0,
    variant: str = "cycle",
    old_classes: bool = True,
    flip_prob: float = 0.5,
    quota_rounding: str = "half_even",
    remainder: str = "last_epoch_unshuffled",
    groups: pd.Series | None = None,
) -> pd.DataFrame:
    """The whole training stream of an incremental phase, epochs concatenated up to the budget."""
    _check_budget("train_phase", iterations, batch_size, flip_prob)
    if world_size < 1:
        raise SamplingError(f"replay.world_size: {world_size}; the stream is for at least 1 training process")
    new_ids = plan.loc[plan["phase"] == phase, "category_id"]
    quotas = replay_quotas(plan, phase, quota_rounding)
    quotas = quotas if old_classes else quotas.iloc[:0]
    images_of = _images_by_class(train_annotations, pd.concat([new_ids, quotas["category_id"]]))
    new_pairs = pd.DataFrame(
        [(img, c) for c in sorted(new_ids) for img in images_of.get(int(c), [])],
        columns=["image_id", "category_id"],
    )
    if new_pairs.empty:
        raise SamplingError(f"phase {phase}: its classes have no training images")
    num_samples = iterations * batch_size * world_size

    def make_epoch(epoch: int, shuffled: bool) -> pd.DataFrame:
        return replay_epoch(new_pairs, quotas, images_of, epoch, seed, variant, shuffled)

    return _stream(
        lambda length: _sequence(make_epoch, num_samples, length, remainder),
        (iterations, batch_size, world_size),
        seed,
        flip_prob,
        groups,
    )


def uniform_stream(
    image_ids: np.ndarray,
    iterations: int,
    batch_size: int,
    world_size: int = 1,
    seed: int = 0,
    flip_prob: float = 0.5,
    groups: pd.Series | None = None,
) -> pd.DataFrame:
    """Every image once per epoch in a seeded order, for base and joint training."""
    image_ids = np.sort(np.asarray(image_ids, dtype=np.int64))
    if len(image_ids) == 0:
        raise SamplingError("no training images")
    factors = pd.Series(1.0, index=image_ids)
    return repeat_factor_stream(factors, iterations, batch_size, world_size, seed, flip_prob, groups)


def repeat_factors(image_classes: pd.DataFrame, threshold: float = 0.001) -> pd.Series:
    """detectron2's repeat-factor sampling: r_c = max(1, sqrt(t / f_c)), f_c the fraction of training
    images holding class c; an image repeats max over its classes. ``image_classes``: image_id, category_id."""
    pairs = image_classes[["image_id", "category_id"]].drop_duplicates()
    num_images = pairs["image_id"].nunique()
    fraction = pairs.groupby("category_id")["image_id"].nunique() / num_images
    class_factor = np.maximum(1.0, np.sqrt(threshold / fraction))
    return pairs["category_id"].map(class_factor).groupby(pairs["image_id"]).max()


def repeat_factor_stream(
    factors: pd.Series,
    iterations: int,
    batch_size: int,
    world_size: int = 1,
    seed: int = 0,
    flip_prob: float = 0.5,
    groups: pd.Series | None = None,
) -> pd.DataFrame:
    """Each epoch repeats image i floor(r_i) times plus once more with probability frac(r_i), shuffled."""
    _check_budget("train_base", iterations, batch_size, flip_prob)
    image_ids = factors.index.to_numpy(np.int64)
    whole, fraction = np.divmod(factors.to_numpy(np.float64), 1.0)

    def epoch_of(epoch: int) -> pd.DataFrame:
        rng = _rng(seed, epoch, 6)
        repeats = whole.astype(np.int64) + (rng.random(len(fraction)) < fraction)
        return pd.DataFrame({"image_id": rng.permutation(np.repeat(image_ids, repeats)), "category_id": NO_TARGET})

    def sequence(length: int) -> pd.DataFrame:
        return pd.concat(_epochs(epoch_of, length), ignore_index=True).iloc[:length]

    return _stream(sequence, (iterations, batch_size, world_size), seed, flip_prob, groups)
