"""The errors of bad input: a file or a config value that lst cannot use.

A step (``lst.steps``) that meets an :class:`InputError` (or a ``FileNotFoundError``) logs its message, one
line naming the file or the config key and the problem, and exits with code 1, writing nothing. Any other
exception is a bug and keeps its traceback. This module depends on nothing, so that the data steps catch
these errors without importing torch.

The subclasses that were ``ValueError`` (or ``RuntimeError``) before the hierarchy existed still are,
so callers that catch those keep working.
"""

from __future__ import annotations


class InputError(Exception):
    """A file or config value that lst cannot use; the message names it and says why, on one line."""


class ConfigError(InputError, ValueError):
    """A config value that is not allowed (an unknown choice, a number out of range); names the key."""


class DataError(InputError, ValueError):
    """An LVIS/COCO json, its annotations or its images: malformed, inconsistent or missing."""


class TableError(InputError, ValueError):
    """A Parquet table between steps: missing, unreadable or not of its schema."""


class PhasePlanError(InputError, ValueError):
    """The class-to-phase plan: phase sizes (``phases.*``) that the dataset cannot give."""


class SamplingError(InputError, ValueError):
    """A sample stream (``replay.*``, repeat-factor sampling) that cannot be drawn."""


class CheckpointError(InputError, ValueError):
    """A torch checkpoint of lst: absent, unreadable, lacking keys or trained for other classes."""


class WeightsError(InputError, ValueError):
    """Pretrained weights (a COCO checkpoint, ImageNet backbone weights) that do not fit the model."""


class TrainingError(InputError, RuntimeError):
    """A training setting (``train_base.*``, ``train_phase.*``) or a run that cannot go on."""
