"""The base class of every method family, with its extension points (docs/extending.md).

A family is a module with one subclass of :class:`Method`; a method is a yaml file naming the family and its
settings (``method: {name, family, settings}``), so that the variants of a family differ by settings only.
The workflow and the steps ask the method, never its name:

- ``kind`` and ``phase_inputs()``: the DAG: incremental (phases 1..K from the shared base model) or joint (every
  class at once), and the files a phase needs made first (``TEACHER_LOGITS``, ``META``; every incremental
  phase has its sample stream, made by build_replay);
- ``stream(request)``: the image stream, as a table of samples (torch-free: build_replay makes it);
- ``classification_loss(classes)``: the RoI classification loss and its test-time scores (by default the
  method file's ``loss``, lst.losses), ``extra_logits()`` the logits it needs beyond background + classes;
- ``initialise_new_rows(phase)``: the new classes' classifier rows, after the old rows are copied;
- ``teacher_terms(phase)``: extra loss terms with the previous model, precomputed or online
  (lst.methods.teacher);
- state across iterations: the classification loss and the teacher terms may hold state
  (``state_dict()`` / ``load_state_dict()``): the trainer saves it in ``last.pt`` and restores it on resume.

Torch-free at import (the workflow and build_replay import the families): import torch inside an extension
point, as the built-in families do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from lst.conf import BASE
from lst.data.sampling import phase_seed, replay_stream

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lst.data.dataset import DetectionData


class Kind(Enum):
    incremental = "incremental"  # phases 1..K, each from the previous phase's model (phase 0: the base model)
    joint = "joint"  # one model on every class at once, trained as the base model is


TEACHER_LOGITS = "teacher_logits"  # the previous model's scores on the new-class boxes (extract_logits)
META = "meta"  # the meta-module trained on the base classes (train_meta)
PHASE_INPUTS = (TEACHER_LOGITS, META)


@dataclass(frozen=True)
class NoSettings:
    """A family without settings."""


@dataclass(frozen=True)
class LossChoice:
    """A method's RoI classification loss: a name of lst.losses.LOSSES and its checked settings dataclass."""

    name: str = "cross_entropy"
    settings: Any = None


@dataclass(frozen=True)
class StreamRequest:
    """What a stream is drawn from: the phase plan, training annotations and images, the budget and the seed."""

    plan: pd.DataFrame  # the phase plan (split/categories.parquet)
    annotations: pd.DataFrame  # training annotations, crowd regions left out; every seen class's among them
    image_ids: np.ndarray  # the phase's training images (its cumulative set)
    phase: int
    iterations: int
    batch_size: int  # images per process and iteration
    world_size: int  # training processes the stream is split across
    seed: int
    flip_prob: float
    groups: pd.Series | None  # aspect group by image_id, or None: no aspect grouping


@dataclass(frozen=True)
class ClassInfo:
    """The classes a model trains on, in label order (label j + 1 is ``category_ids[j]``), for losses that
    weigh them."""

    category_ids: tuple[int, ...]
    image_counts: np.ndarray  # training images holding each class (the split's image_count)
    num_images: int  # training images of the phase
    num_old: int  # classes of the earlier phases (0 for base and joint models)
    phase: int
    seed: int  # the run's seed (a phase's own draws: lst.data.sampling.phase_seed(seed, phase))

    @classmethod
    def of(cls, plan: pd.DataFrame, category_ids: Sequence[int], num_images: int, num_old: int, phase: int, seed: int):
        """The classes ``category_ids`` (label order) with their image counts from the phase plan."""
        counts = plan.set_index("category_id").loc[list(category_ids), "image_count"].to_numpy(np.int64)
        return cls(tuple(int(c) for c in category_ids), counts, num_images, num_old, phase, seed)


@dataclass
class PhaseTraining:
    """An incremental phase being set up: the model grown from the previous one, its data and inputs."""

    model: nn.Module  # the phase's model: the previous model's weights, the classifier grown
    previous: dict[str, Any]  # the previous model's checkpoint (model, category_ids, config)
    data: DetectionData  # the phase's training images and annotations
    num_old: int  # classes of the earlier phases
    inputs: dict[str, str]  # the files of phase_inputs(), by name
    device: torch.device
    phase: int
    seed: int  # the run's seed (a phase's own draws: lst.data.sampling.phase_seed(seed, phase))


class Method:
    """A method family. Subclasses set ``kind`` and ``Settings`` (a frozen dataclass: typed, with ranges,
    checked when the config is loaded) and override the extension points they change."""

    kind: ClassVar[Kind] = Kind.incremental
    Settings: ClassVar[type] = NoSettings

    def __init__(
        self,
        name: str,
        settings: Any,
        config: Mapping[str, Any] | None = None,
        loss: LossChoice | None = None,
        base: str = BASE,
    ):
        self.name, self.settings = name, settings
        self.config = config if config is not None else {}  # the step's settings (lst.steps.settings.READS)
        self.loss = loss or LossChoice()
        self.base = base  # the method file of an incremental method's phase-0 model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {dataclasses.asdict(self.settings)}, loss {self.loss.name!r})"

    def phase_inputs(self) -> tuple[str, ...]:
        """The files an incremental phase needs made before it trains, among ``PHASE_INPUTS``."""
        return ()

    def stream(self, request: StreamRequest) -> pd.DataFrame:
        """The phase's whole sample stream (the REPLAY table: epoch, rank, position, image_id, category_id,
        flip). Incremental: each (image, new class) pair once per epoch, no old class."""
        return self.phase_stream(request, old_classes=False)

    def phase_stream(self, request: StreamRequest, old_classes: bool) -> pd.DataFrame:
        """LST's phase stream (lst.data.sampling.replay_stream), with balanced replay of the old classes or none."""
        replay = self.config["replay"]
        return replay_stream(
            request.plan,
            request.annotations,
            request.phase,
            iterations=request.iterations,
            batch_size=request.batch_size,
            world_size=request.world_size,
            seed=request.seed,
            variant=replay["variant"],
            old_classes=old_classes,
            flip_prob=request.flip_prob,
            quota_rounding=replay["quota_rounding"],
            remainder=replay["remainder"],
            groups=request.groups,
        )

    def classification_loss(self, classes: ClassInfo) -> nn.Module:
        """The RoI classification loss, called ``loss(class_logits [R, 1+C + extra_logits()], labels [R])``
        (column and label 0 the background), with ``loss.scores(class_logits)`` its test-time scores.
        Default: the method file's ``loss`` (lst.losses; softmax cross-entropy unless it says), a ``seed`` it
        leaves None taken from the run's seed and the phase."""
        from lst.losses import classification_loss

        settings = dataclasses.asdict(self.loss.settings) if self.loss.settings is not None else {}
        if "seed" in settings and settings["seed"] is None:
            settings["seed"] = phase_seed(classes.seed, classes.phase)
        counts = [int(c) for c in classes.image_counts]
        return classification_loss(self.loss.name, len(classes.category_ids), counts, classes.num_images, **settings)

    def extra_logits(self) -> int:
        """Class logits the model outputs beyond background + classes for this method's loss (Seesaw: 1)."""
        from lst.losses import extra_logits

        return extra_logits(self.loss.name)

    def initialise_new_rows(self, phase: PhaseTraining) -> None:
        """Set the new classes' classifier rows of ``phase.model`` (rows 1 + num_old onwards); by default they
        keep grow_classifier's draws (as the released code: N(0, 0.01))."""

    def teacher_terms(self, phase: PhaseTraining) -> Any:
        """Extra loss terms of an incremental phase, or None: a callable ``terms(forward)`` of the
        trainer's :class:`lst.engine.trainer.Forward` (the student, its batch and its outputs) returning a dict
        of named scalar losses, added to the model's. lst.methods.teacher builds the online teacher."""
        return None
