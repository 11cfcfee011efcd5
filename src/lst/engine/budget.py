"""How long a base or joint model trains (``train_base.joint_budget``). Without torch: the workflow sizes the
training jobs from it when it builds the DAG."""

from __future__ import annotations

from typing import Any

from lst.conf.schema import JointBudget


def base_schedule(cfg: dict[str, Any], num_incremental: int) -> dict[str, Any]:
    """train_base of ``cfg`` at its phase: as written for a base model (phase 0) and for ``joint_budget: base``;
    stretched by :func:`equal_images_budget` over ``num_incremental`` phases for ``equal_images``."""
    train_cfg = cfg["train_base"]
    if cfg["phase"] == 0 or JointBudget(train_cfg["joint_budget"]) is JointBudget.base:
        return train_cfg
    return equal_images_budget(train_cfg, cfg["train_phase"], num_incremental)


def equal_images_budget(base: dict[str, Any], phase: dict[str, Any], num_incremental: int) -> dict[str, Any]:
    """``base`` (train_base) stretched to as many images (global batches: over every process) as the base phase
    and ``num_incremental`` incremental phases see together; multistep steps keep their fractions."""
    images = base["iterations"] * base["batch_size"] + num_incremental * phase["iterations"] * phase["batch_size"]
    iterations = -(-images // base["batch_size"])
    steps = [round(step * iterations / base["iterations"]) for step in base["steps"]]
    return {**base, "iterations": iterations, "steps": steps}
