"""Entrypoints, one per Snakemake rule: ``python -m lst.steps.<step> [hydra overrides]``.

Each is a Hydra app over the config tree in ``lst/conf`` (``version_base="1.3"``, no change of
working directory). Errors in the user's inputs end the step with one clear line and exit code 1.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lst.errors import ConfigError, InputError

log = logging.getLogger("lst")


def step(func: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
    """Wrap ``func(cfg_dict)`` as a Hydra entrypoint with lst's config tree."""

    @hydra.main(version_base="1.3", config_path="../conf", config_name="lst")
    @functools.wraps(func)
    def main(cfg: DictConfig) -> None:
        # torch takes about 3 s and 600 MB to import: the data steps do without it; every step that uses
        # torch imports it at module level (before this runs), so its threads are set here all the same
        if "torch" in sys.modules:
            # ``threads`` is the job's: under torchrun its processes on this node share them
            local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            sys.modules["torch"].set_num_threads(max(1, int(cfg.threads) // local_processes))
        config = OmegaConf.to_container(cfg, resolve=True)
        try:
            func(config)
        except (InputError, FileNotFoundError) as error:  # bad input: one line; anything else is a bug
            log.error("%s", error)
            _remove_hydra_files()
            sys.exit(1)
        except Exception:
            _remove_hydra_files()
            raise

    return main


def _remove_hydra_files() -> None:
    """Take back what Hydra wrote into the step's output folder, so a failed step leaves no trace there."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    written = run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else run_dir
    if written != run_dir:
        shutil.rmtree(written, ignore_errors=True)
    (run_dir / f"{hydra_cfg.job.name}.log").unlink(missing_ok=True)
    for folder in [written, *written.parents]:  # folders Hydra made that are now empty, up to the run dir
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        if folder == run_dir:
            break


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
