"""Sample streams: which (image, target class, flip) each training iteration of each process sees.

``uniform_stream`` serves the base phase and joint training (every image once per epoch).
``replay_stream`` is LST's instance-level balanced replay (METHOD.md section 4): each epoch holds every
(image, new class) pair plus n_c (image, c) pairs per old class c, with
n_c = max(1, round(m / (instances_c / images_c))) and m the mean training instance count of the new
classes, so each old class contributes about as many instances per epoch as an average new class.
Rounding is half-up. Without replay (``old_classes=False``) an epoch holds the new-class pairs only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

VARIANTS = ("rand_balanced", "cycle", "fixed")
NO_TARGET = 0  # category_id of a sample that has no target class (base and joint training)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def replay_quotas(split: pd.DataFrame, phase: int) -> pd.DataFrame:
    """Old classes of ``phase`` with their per-epoch image quota n_c (column ``quota``)."""
    new = split[split["phase"] == phase]
    if new.empty:
        raise ValueError(f"phase {phase} has no classes")
    mean_new_instances = new["instance_count"].mean()
    old = split[(split["phase"] >= 0) & (split["phase"] < phase) & (split["image_count"] > 0)]
    old = old.sort_values("rank")[["category_id", "rank", "instance_count", "image_count"]].copy()
    per_image = old["instance_count"] / old["image_count"]
    old["quota"] = np.maximum(1, np.floor(mean_new_instances / per_image + 0.5)).astype(np.int64)
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


def replay_epoch(
    new_pairs: pd.DataFrame,
    quotas: pd.DataFrame,
    images_of: dict[int, np.ndarray],
    epoch: int,
    seed: int,
    variant: str,
) -> pd.DataFrame:
    """One shuffled epoch of (image_id, category_id) pairs."""
    if variant not in VARIANTS:
        raise ValueError(f"replay variant {variant!r} is not one of {VARIANTS}")
    old_images, old_classes = [], []
    draw_rng = _rng(seed, 0 if variant == "fixed" else epoch, 1)
    for row in quotas.itertuples():
        pool = images_of[int(row.category_id)]
        if variant == "cycle":
            order = _rng(seed, 2, row.category_id).permutation(pool)
            start = epoch * row.quota
            chosen = order[np.arange(start, start + row.quota) % len(order)]
        else:
            chosen = _draw(pool, int(row.quota), draw_rng)
        old_images.append(chosen)
        old_classes.append(np.full(len(chosen), row.category_id, dtype=np.int64))
    image_ids = np.concatenate([new_pairs["image_id"].to_numpy(np.int64), *old_images])
    category_ids = np.concatenate([new_pairs["category_id"].to_numpy(np.int64), *old_classes])
    order = _rng(seed, epoch, 3).permutation(len(image_ids))
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
            raise ValueError("an epoch has no samples")
        epochs.append(pairs.assign(epoch=len(epochs)))
        total += len(pairs)
    return epochs


def _finish(
    epochs: list[pd.DataFrame],
    num_samples: int,
    seed: int,
    flip_prob: float,
    batch_size: int,
    world_size: int,
) -> pd.DataFrame:
    stream = pd.concat(epochs, ignore_index=True).iloc[:num_samples]
    stream["flip"] = _rng(seed, 4).random(len(stream)) < flip_prob
    stream = _assign_ranks(stream, batch_size, world_size)
    stream["epoch"] = stream["epoch"].astype(np.int32)
    return stream[["epoch", "rank", "position", "image_id", "category_id", "flip"]].reset_index(drop=True)


def replay_stream(
    split: pd.DataFrame,
    train_annotations: pd.DataFrame,
    phase: int,
    iterations: int,
    batch_size: int,
    world_size: int = 1,
    seed: int = 0,
    variant: str = "rand_balanced",
    old_classes: bool = True,
    flip_prob: float = 0.5,
) -> pd.DataFrame:
    """The whole training stream of an incremental phase, epochs concatenated up to the budget."""
    new_ids = split.loc[split["phase"] == phase, "category_id"]
    quotas = replay_quotas(split, phase) if old_classes else replay_quotas(split, phase).iloc[:0]
    images_of = _images_by_class(train_annotations, pd.concat([new_ids, quotas["category_id"]]))
    new_pairs = pd.DataFrame(
        [(img, c) for c in sorted(new_ids) for img in images_of.get(int(c), [])],
        columns=["image_id", "category_id"],
    )
    if new_pairs.empty:
        raise ValueError(f"phase {phase}: its classes have no training images")
    num_samples = iterations * batch_size * world_size
    epochs = _epochs(lambda epoch: replay_epoch(new_pairs, quotas, images_of, epoch, seed, variant), num_samples)
    return _finish(epochs, num_samples, seed, flip_prob, batch_size, world_size)


def uniform_stream(
    image_ids: np.ndarray,
    iterations: int,
    batch_size: int,
    world_size: int = 1,
    seed: int = 0,
    flip_prob: float = 0.5,
) -> pd.DataFrame:
    """Every image once per epoch in a seeded order, for base and joint training."""
    image_ids = np.sort(np.asarray(image_ids, dtype=np.int64))
    if len(image_ids) == 0:
        raise ValueError("no training images")
    factors = pd.Series(1.0, index=image_ids)
    return repeat_factor_stream(factors, iterations, batch_size, world_size, seed, flip_prob)


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
) -> pd.DataFrame:
    """Each epoch repeats image i floor(r_i) times plus once more with probability frac(r_i), shuffled."""
    image_ids = factors.index.to_numpy(np.int64)
    whole, fraction = np.divmod(factors.to_numpy(np.float64), 1.0)

    def epoch_of(epoch: int) -> pd.DataFrame:
        rng = _rng(seed, epoch, 6)
        repeats = whole.astype(np.int64) + (rng.random(len(fraction)) < fraction)
        return pd.DataFrame({"image_id": rng.permutation(np.repeat(image_ids, repeats)), "category_id": NO_TARGET})

    num_samples = iterations * batch_size * world_size
    epochs = _epochs(epoch_of, num_samples)
    return _finish(epochs, num_samples, seed, flip_prob, batch_size, world_size)
