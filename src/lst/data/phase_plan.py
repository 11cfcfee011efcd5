"""The phase plan: categories sorted by training instances and cut into a base phase and incremental phases.

docs/method.md section 1. A class's label inside a model is its 1-based position in the sorted order
(the plan's ``rank`` column: label order, not a DDP process rank); phase k's
training (and val) set is cumulative: every image holding a class of phases 0..k, with the
annotations of those classes only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from lst.errors import PhasePlanError

log = logging.getLogger(__name__)

# LVIS frequency groups from the number of training images: rare 1-10, common 11-100, frequent > 100.
LVIS_FREQUENCY_THRESHOLDS = (10, 100)


def phase_sizes(
    num_categories: int,
    base: int | None = None,
    step: int | None = None,
    num_incremental: int | None = None,
    sizes: list[int] | None = None,
) -> list[int]:
    """Number of classes of each phase: explicit ``sizes``, or ``base`` then phases of ``step``.

    Without ``num_incremental`` the steps continue until every category is placed (the last one may
    be smaller). Categories beyond the configured phases are never learned.
    """
    phases = {"base": base, "step": step, "num_incremental": num_incremental, "sizes": sizes}
    if sizes is None:
        if base is not None and base > num_categories:
            raise PhasePlanError(f"phases.base = {base} is larger than the number of classes ({num_categories})")
        num_incremental = phase_count(phases, lambda: num_categories)
        sizes = [base] + [step] * num_incremental
        key = "phases.base/step/num_incremental"
        rest = num_categories - base - step * (num_incremental - 1) if num_incremental else 0
        if num_incremental and rest < step:
            sizes[-1] = rest
    else:
        key = "phases.sizes"
    sizes = [int(s) for s in sizes]
    if not sizes:
        raise PhasePlanError(f"{key}: no phases")
    for phase, size in enumerate(sizes):
        if size <= 0:
            raise PhasePlanError(f"{key}: phase {phase} would have {size} classes: a phase needs at least one class")
    if sum(sizes) > num_categories:
        raise PhasePlanError(f"{key} need {sum(sizes)} classes ({sizes}) but the dataset has {num_categories}")
    return sizes


def phase_count(phases: dict[str, Any], num_categories: Callable[[], int]) -> int:
    """K, the number of incremental phases of the ``phases`` settings (``sizes`` wins over ``base`` + ``step``).

    ``num_categories()`` is called only when K depends on it (``base`` + ``step`` without ``num_incremental``):
    the workflow counts the categories of the train json for it when it builds the DAG, the split step has
    them in its table."""
    if phases.get("sizes") is not None:
        return len(phases["sizes"]) - 1
    base, step = phases.get("base"), phases.get("step")
    if base is None or step is None:
        raise PhasePlanError("phases: give either 'sizes' or both 'base' and 'step'")
    if phases.get("num_incremental") is not None:
        return phases["num_incremental"]
    if step <= 0:
        raise PhasePlanError(f"phases.step = {step}: a phase needs at least one class")
    return math.ceil((num_categories() - base) / step)


def frequency_of(image_count: np.ndarray, thresholds: tuple[int, int] = LVIS_FREQUENCY_THRESHOLDS) -> np.ndarray:
    rare, common = thresholds
    return np.where(image_count <= rare, "r", np.where(image_count <= common, "c", "f"))


def plan_phases(categories: pd.DataFrame, annotations: pd.DataFrame, sizes: list[int]) -> pd.DataFrame:
    """Rank categories by training instance count (descending, ties by ascending id) and assign phases.

    ``annotations`` are the training annotations. Categories without a frequency in the source json
    get one from the LVIS rule on their training image counts.
    """
    counts = annotations.groupby("category_id").agg(
        instance_count=("annotation_id", "size"), image_count=("image_id", "nunique")
    )
    table = categories.merge(counts, left_on="category_id", right_index=True, how="left")
    table[["instance_count", "image_count"]] = table[["instance_count", "image_count"]].fillna(0).astype(np.int64)
    missing = table["frequency"] == ""
    table.loc[missing, "frequency"] = frequency_of(table.loc[missing, "image_count"].to_numpy())
    table = table.sort_values(["instance_count", "category_id"], ascending=[False, True], kind="stable")
    table = table.reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1, dtype=np.int64)
    phase = np.full(len(table), -1, dtype=np.int32)
    bounds = np.cumsum([0, *sizes])
    for k in range(len(sizes)):
        phase[bounds[k] : bounds[k + 1]] = k
    table["phase"] = phase
    unplaced = int((phase < 0).sum())
    if unplaced:
        log.warning("%d categories lie beyond the configured phases and are never learned", unplaced)
    return table[["category_id", "name", "frequency", "instance_count", "image_count", "rank", "phase"]]


def image_membership(images: pd.DataFrame, annotations: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """For every image, the first phase whose cumulative set holds it (null if none).

    ``images`` and ``annotations`` of one split: image ids are unique within a split only."""
    phase_of = plan.set_index("category_id")["phase"]
    annotation_phase = annotations["category_id"].map(phase_of)
    annotation_phase = annotation_phase.where(annotation_phase >= 0)
    first = annotation_phase.groupby(annotations["image_id"]).min()
    table = images[["image_id", "split"]].copy()
    table["first_phase"] = table["image_id"].map(first).astype("Int32")
    return table


def phase_summary(plan: pd.DataFrame, membership: pd.DataFrame, val_instances: pd.Series | None = None) -> pd.DataFrame:
    """One row per phase: classes, label range, f/c/r mix, its classes' training instances (sum, fewest and
    most per class) and val instances, and the cumulative train and val image counts.

    ``val_instances``: val annotations per category id (none given: 0).
    """
    first_phase = membership["first_phase"]
    rows = []
    for phase, classes in plan[plan["phase"] >= 0].groupby("phase"):
        mix = classes["frequency"].value_counts()
        seen = first_phase.notna() & (first_phase <= phase)
        val = 0 if val_instances is None else int(val_instances.reindex(classes["category_id"]).fillna(0).sum())
        rows.append(
            {
                "phase": int(phase),
                "num_classes": len(classes),
                "first_rank": int(classes["rank"].min()),
                "last_rank": int(classes["rank"].max()),
                "f": int(mix.get("f", 0)),
                "c": int(mix.get("c", 0)),
                "r": int(mix.get("r", 0)),
                "instances": int(classes["instance_count"].sum()),
                "min_instances": int(classes["instance_count"].min()),
                "max_instances": int(classes["instance_count"].max()),
                "val_instances": val,
                "train_images": int((seen & (membership["split"] == "train")).sum()),
                "val_images": int((seen & (membership["split"] == "val")).sum()),
            }
        )
    return pd.DataFrame(rows)


def phase_report(phases: pd.DataFrame) -> str:
    """Markdown table of the phases, for people: one line per phase."""
    header = (
        "| phase | classes | ranks | f / c / r | train instances (per class) | val instances "
        "| train images (cumulative) | val images (cumulative) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in phases.itertuples():
        lines.append(
            f"| {row.phase} | {row.num_classes} | {row.first_rank}-{row.last_rank} | {row.f} / {row.c} / {row.r} | "
            f"{row.instances} ({row.min_instances}-{row.max_instances}) | {row.val_instances} | "
            f"{row.train_images} | {row.val_images} |"
        )
    return "\n".join(lines) + "\n"


def seen_categories(plan: pd.DataFrame, phase: int) -> pd.DataFrame:
    """Categories learned by the end of ``phase``, in label order (label = the ``rank`` column)."""
    seen = plan[(plan["phase"] >= 0) & (plan["phase"] <= phase)]
    return seen.sort_values("rank").reset_index(drop=True)
