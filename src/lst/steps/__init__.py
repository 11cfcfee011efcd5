"""Entrypoints, one per Snakemake rule: ``python -m lst.steps.<step> [hydra overrides]``.

Each is a Hydra app over the config tree in ``lst/conf`` (``version_base="1.3"``, no change of
working directory). Errors in the user's inputs end the step with one clear line and exit code 1.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lst")


def _input_errors() -> tuple[type[Exception], ...]:
    from lst.checkpoint import CheckpointError
    from lst.engine import TrainingError
    from lst.lvis_json import DataError
    from lst.splitting import SplitError
    from lst.tables import TableError
    from lst.weights import WeightsError

    return (
        CheckpointError,
        DataError,
        SplitError,
        TableError,
        TrainingError,
        WeightsError,
        FileNotFoundError,
    )


def step(func: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
    """Wrap ``func(cfg_dict)`` as a Hydra entrypoint with lst's config tree."""

    @hydra.main(version_base="1.3", config_path="../conf", config_name="lst")
    @functools.wraps(func)
    def main(cfg: DictConfig) -> None:
        import torch

        torch.set_num_threads(int(cfg.threads))
        config = OmegaConf.to_container(cfg, resolve=True)
        try:
            func(config)
        except _input_errors() as error:
            log.error("%s", error)
            sys.exit(1)

    return main


def require(cfg: dict[str, Any], *keys: str) -> list[Any]:
    """Values of dotted config keys that a step cannot run without."""
    values = []
    for key in keys:
        value: Any = cfg
        for part in key.split("."):
            value = value[part]
        if value is None:
            raise FileNotFoundError(f"config key {key} is not set (the Snakemake rule passes it)")
        values.append(value)
    return values
