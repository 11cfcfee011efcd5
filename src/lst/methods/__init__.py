"""Methods: one module per method family on one base class, :class:`Method` (lst.methods.method), with the
extension points the field's methods need; a method is a yaml file naming its family and settings. Torch-free:
the families import torch inside their extension points. May import data, losses, modeling, engine.
``classification_loss`` is lst.losses' (a loss by name, usable outside the pipeline).
"""

from lst.losses import classification_loss
from lst.methods.method import (
    META,
    PHASE_INPUTS,
    TEACHER_LOGITS,
    ClassInfo,
    Kind,
    Method,
    NoSettings,
    PhaseTraining,
    StreamRequest,
)
from lst.methods.registry import family_class, load_method

__all__ = [
    "META",
    "PHASE_INPUTS",
    "TEACHER_LOGITS",
    "ClassInfo",
    "Kind",
    "Method",
    "NoSettings",
    "PhaseTraining",
    "StreamRequest",
    "classification_loss",
    "family_class",
    "load_method",
]
