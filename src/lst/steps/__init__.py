"""Entrypoints, one per Snakemake rule: ``python -m lst.steps.<step> [hydra overrides]``.

Each is a Hydra app over the config tree in ``lst/conf`` (``version_base="1.3"``, no change of
working directory, no files of Hydra's own unless ``hydra.output_subdir`` asks), typed by ``lst.conf.schema``:
a key the schema lacks, a bad value or a bad method (lst.methods.load_method) ends the step in one line before
anything runs. A step sees the settings
``lst.steps.settings.READS`` declares for it and ``paths``. Errors in the user's inputs end the step with
one clear line and exit code 1.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser  # hydra.main's own parser: the overrides among the flags
from omegaconf import DictConfig

import lst.conf
from lst.errors import CheckpointError, ConfigError, InputError
from lst.methods import Method, load_method
from lst.steps.settings import READS, covers, select

log = logging.getLogger("lst")


def step(func: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
    """Wrap ``func(settings)`` as a Hydra entrypoint with lst's config tree: ``settings`` holds the keys
    READS declares for the step (the module's name) and ``paths``."""
    name = _step_name(func)

    @functools.wraps(func)
    def main() -> None:
        # composed here first, so that a bad key or value ends the step in one line (lst.conf.config_error);
        # Hydra would print its report on several lines
        try:
            config = lst.conf.compose(get_args_parser().parse_args().overrides)
            if covers(READS[name], "method"):
                load_method(config["method"], config["method_dirs"])  # its family and settings
        except ConfigError as error:
            print(f"[lst][ERROR] - {error}", file=sys.stderr)
            sys.exit(1)
        run()

    @hydra.main(version_base="1.3", config_path="../conf", config_name="lst")
    @functools.wraps(func)
    def run(cfg: DictConfig) -> None:
        # torch takes about 3 s and 600 MB to import: the data steps do without it; every step that uses
        # torch imports it at module level (before this runs), so its threads are set here all the same
        if "torch" in sys.modules:
            # ``threads`` is the job's: under torchrun its processes on this node share them
            local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            sys.modules["torch"].set_num_threads(max(1, int(cfg.threads) // local_processes))
        config = lst.conf.to_values(cfg)
        settings = select(config, (*READS[name], "paths", "method_dirs"), mapping=_Declared)
        try:
            func(settings)
        except (InputError, FileNotFoundError) as error:  # bad input: one line; anything else is a bug
            log.error("%s", error)
            sys.exit(1)

    return main


def _step_name(func: Callable) -> str:
    """``lst.steps.<name>``'s name, also when it runs as ``python -m`` (module ``__main__``)."""
    module = func.__module__
    if module == "__main__":
        module = sys.modules["__main__"].__spec__.name
    return module.rpartition(".")[2]


class _Declared(dict):
    """A step's settings: reading one READS does not declare for it is a bug of the step, said so."""

    def __missing__(self, key: str) -> Any:
        raise KeyError(f"{key!r} is not among the settings lst.steps.settings.READS declares for this step")


def require(cfg: dict[str, Any], *keys: str) -> list[Any]:
    """Values of dotted config keys that a step cannot run without."""
    values = []
    for key in keys:
        value: Any = cfg
        for part in key.split("."):
            value = value[part]
        if value is None:
            raise ConfigError(f"config key {key} is not set (the Snakemake rule passes it)")
        values.append(value)
    return values


def method_of(cfg: dict[str, Any]) -> Method:
    """The step's method (``method``, its family found in lst.methods or ``method_dirs``), reading ``cfg``."""
    return load_method(cfg["method"], cfg["method_dirs"], cfg)


def check_loss_layout(method: Method, model_cfg: dict[str, Any], path: str | os.PathLike) -> None:
    """The model of checkpoint ``path`` has the class logits ``method``'s loss needs (Seesaw's objectness)."""
    have, need = model_cfg.get("extra_logits", 0), method.extra_logits()
    if have != need:
        raise CheckpointError(
            f"{path}: its model has {have} class logits beyond background + classes, method {method.name}'s loss "
            f"{method.loss.name} needs {need}; its phase-0 model (method.base) must be trained with that layout"
        )


def training_dir(cfg: dict[str, Any]) -> str:
    """A training step's folder for checkpoints and TensorBoard: ``paths.work_dir``, else train/ beside its model."""
    return cfg["paths"]["work_dir"] or str(Path(cfg["paths"]["model"]).parent / "train")
