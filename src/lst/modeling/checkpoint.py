"""Checkpoints: a plain dict of tensors and builtins, saved atomically, loaded with weights_only=True.

Layout::

    {"model": state_dict,            # torchvision key names
     "category_ids": [int, ...],     # LVIS ids of the classes, in label order (label = index + 1)
     "iteration": int,               # iterations done
     "config": dict,                 # the resolved Hydra config (builtins only)
     "meta": dict,                   # provenance (not the meta-module), e.g. input normalisation of converted weights
     "optimizer": ..., "scheduler": ..., "run_id": ...}  # only in training checkpoints
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lst.errors import CheckpointError
from lst.io import atomic_path


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only torch checkpoint ({error})") from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the key(s) {missing}")
    return checkpoint
