"""lst's training hooks (lst.engine.train_loop): loss check, progress log and TensorBoard, checkpoints, replica check.

``lst.engine.trainer.train`` registers them in this order, with the caller's hooks (e.g. the periodic
evaluation, lst.evaluation.periodic_eval) after the log and before the replica check and the checkpoint::

    FiniteLossCheck, TrainingLog, *caller's hooks, ReplicaCheck, PeriodicCheckpoint

so that a step with a non-finite loss is neither logged nor saved, and the final checkpoint is written
once the ranks are known to agree. They read the trainer's ``model``, ``loss``, ``losses``,
``optimizer`` and ``data_time`` (lst.engine.trainer.Trainer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from lst.engine import distributed
from lst.engine.train_loop import HookBase
from lst.errors import TrainingError
from lst.modeling.checkpoint import load_checkpoint, save_checkpoint

# a child of the engine's logger: the training log lines keep their logger's level and handlers
log = logging.getLogger("lst.engine.trainer.hooks")


class CallbackHook(HookBase):
    """A function ``callback(iteration, model)`` called after each update (a benchmark's timer, a test's probe)."""

    def __init__(self, callback: Callable[[int, nn.Module], None]):
        self.callback = callback

    def after_step(self) -> None:
        self.callback(self.trainer.iter, self.trainer.model)


class FiniteLossCheck(HookBase):
    """Stops training at a non-finite loss on this rank, before its backward: no update, log or checkpoint
    of that iteration, and no NaN gradient reaches the other ranks."""

    def __init__(self, last_checkpoint: Path):
        self.last_checkpoint = last_checkpoint

    def before_backward(self) -> None:
        trainer = self.trainer
        if torch.isfinite(trainer.loss):
            return
        terms = {key: round(float(value.detach()), 4) for key, value in trainer.losses.items()}
        raise TrainingError(
            f"iteration {trainer.iter}: the loss is not finite ({terms}) on rank {distributed.rank()}; "
            f"the last good checkpoint is {self.last_checkpoint}"
        )


def format_eta(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class TrainingLog(HookBase):
    """Every ``period`` iterations and at the last: the loss terms of the global batch (their mean over the
    ranks: every rank takes part), a progress line in the log and scalars ``loss/*`` and ``lr`` in
    TensorBoard, written by rank 0. A resumed run drops the TensorBoard points after its start iteration
    (those of the interrupted run that it makes again) and keeps the point of that iteration."""

    def __init__(self, tensorboard_dir: Path, period: int):
        self.tensorboard_dir, self.period = tensorboard_dir, period
        self.writer: SummaryWriter | None = None
        self.started = self.data_time = 0.0

    def before_train(self) -> None:
        if distributed.is_main():
            self.writer = SummaryWriter(str(self.tensorboard_dir), purge_step=self.trainer.start_iter + 1)
        self.started, self.data_time = time.perf_counter(), 0.0

    def after_step(self) -> None:
        trainer = self.trainer
        self.data_time += trainer.data_time
        if trainer.iter % self.period and trainer.iter != trainer.max_iter:
            return
        means = distributed.mean_over_ranks({"loss_total": trainer.loss, **trainer.losses})
        if self.writer is not None:
            self.write({key: float(value) for key, value in means.items()})

    def write(self, logged: dict[str, float]) -> None:
        trainer, iteration = self.trainer, self.trainer.iter
        elapsed = time.perf_counter() - self.started
        per_iteration = elapsed / (iteration - trainer.start_iter)
        lr = trainer.optimizer.param_groups[0]["lr"]
        mean_total = logged.pop("loss_total")
        terms = "  ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in logged.items())
        log.info(
            "iter %d/%d  loss %.3f  (%s)  lr %.2e  %.2f s/it (data %.1f%%)  eta %s",
            iteration, trainer.max_iter, mean_total, terms, lr, per_iteration, 100 * self.data_time / elapsed,
            format_eta(per_iteration * (trainer.max_iter - iteration)),
        )  # fmt: skip
        self.writer.add_scalar("loss/total", mean_total, iteration)
        for key, value in logged.items():
            self.writer.add_scalar(f"loss/{key}", value, iteration)
        self.writer.add_scalar("lr", lr, iteration)

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ReplicaCheck(HookBase):
    """At the end of a DDP run, all ranks must hold the same weights; rank 0 logs every rank's digest."""

    def after_train(self) -> None:
        if distributed.world_size() == 1:
            return
        digests = distributed.all_gather_object(distributed.state_digest(self.trainer.model.state_dict()))
        if len(set(digests)) != 1:
            raise TrainingError(f"the ranks ended with different weights: state digests by rank {digests}")
        log.info("state digests by rank: %s (the replicas agree)", " ".join(digests))


def contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in the default layout, whatever memory format training used."""
    return {key: value.contiguous() for key, value in model.state_dict().items()}


class TrainingState:
    """What resumes a run, in ``path`` (``last.pt``): model, optimiser, schedule (and fp16 loss-scale) state,
    the state of ``method_state``'s objects that have a ``state_dict()``, the iteration and the run's
    fingerprint ``run_id``. Rank 0 saves it; every rank resumes from it."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        method_state: Mapping[str, Any] | None = None,
    ):
        self.path, self.run_id = path, run_id
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.method_state = {k: v for k, v in (method_state or {}).items() if hasattr(v, "state_dict")}

    def resume(self) -> int:
        """Load ``path`` if it was written by this run (same fingerprint); return the iteration to start from."""
        start = 0
        if self.path.exists():
            state = load_checkpoint(self.path, required=("model", "optimizer", "scheduler", "iteration"))
            if state.get("run_id") == self.run_id:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                if "scaler" in state:
                    self.scaler.load_state_dict(state["scaler"])
                for name, saved in state.get("method_state", {}).items():
                    self.method_state[name].load_state_dict(saved)
                start = int(state["iteration"])
                log.info("resuming from %s at iteration %d", self.path, start)
            else:
                log.warning("%s was made with another configuration: training from the start", self.path)
        distributed.barrier()  # every rank has read last.pt before rank 0 may replace it
        return start

    def save(self, iteration: int) -> None:
        if not distributed.is_main():
            return
        state = {
            "model": contiguous_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": iteration,
            "run_id": self.run_id,
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        if self.method_state:
            state["method_state"] = {name: value.state_dict() for name, value in self.method_state.items()}
        save_checkpoint(state, self.path)


class PeriodicCheckpoint(HookBase):
    """Saves the training state every ``period`` iterations and after the last."""

    def __init__(self, state: TrainingState, period: int):
        self.state, self.period = state, period

    def after_step(self) -> None:
        iteration = self.trainer.iter
        if iteration % self.period == 0 and iteration < self.trainer.max_iter:
            self.state.save(iteration)

    def after_train(self) -> None:
        self.state.save(self.trainer.max_iter)
