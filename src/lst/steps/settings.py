"""The settings each step reads: the keys of the Hydra config (a dotted key takes the whole value under it).

A step sees these, ``paths`` and ``method_dirs`` (where users' methods are: not a setting) only
(``lst.steps.step`` drops the rest, so a step that reads an undeclared key fails at once), and its Snakemake
rule records their resolved values: a changed setting reruns exactly the steps that read it. Torch-free: the
workflow imports it to build the DAG.
"""

from __future__ import annotations

from typing import Any

# the periodic evaluation of the training steps (lst.evaluation.periodic_eval.training_hooks)
_PERIODIC_EVAL = ("phase", "dataset.image_root", "eval")

READS: dict[str, tuple[str, ...]] = {
    "make_demo": ("demo",),
    "prepare_data": ("dataset.train_json", "dataset.val_json"),
    "check_data": ("dataset.image_root", "check"),
    "split": ("phases",),
    "trim_weights": (),
    "train_base": (  # the base model, and a joint model: its budget counts the phases' images
        "device", "seed", "method", "rfs_threshold", "model", "train_base",
        "train_phase.iterations", "train_phase.batch_size", *_PERIODIC_EVAL,
    ),
    "train_meta": ("device", "seed", "dataset.image_root", "meta", "eval.batch_size"),
    "extract_logits": ("device", "phase", "dataset.image_root", "eval.batch_size"),
    "build_replay": (
        "seed", "phase", "method", "replay", "train_phase.iterations", "train_phase.batch_size",
        "train_phase.flip_prob", "train_phase.aspect_grouping",
    ),
    "train_phase": (
        "device", "seed", "method", "train_phase", "distill", "meta.per_class",
        *_PERIODIC_EVAL,
    ),
    "evaluate": ("device", "phase", "dataset.image_root", "method", "eval", "report.gallery"),
    "gallery": ("dataset.image_root", "report.models", "report.gallery"),
    "report": ("dataset.name", "report.models", "report.reference"),
}  # fmt: skip


def select(config: dict[str, Any], keys: tuple[str, ...], mapping: type[dict] = dict) -> dict[str, Any]:
    """The part of ``config`` under ``keys`` (dotted), nested as in ``config`` in ``mapping``s."""
    selected: dict[str, Any] = mapping()
    for key in keys:
        *parents, last = key.split(".")
        source, target = config, selected
        for part in parents:
            source, target = source[part], target.setdefault(part, mapping())
        target[last] = source[last]
    return selected


def covers(keys: tuple[str, ...], key: str) -> bool:
    """Whether the setting ``key`` (dotted) is read under ``keys``."""
    return any(key == read or key.startswith(f"{read}.") for read in keys)
