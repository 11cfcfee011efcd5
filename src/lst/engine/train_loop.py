"""The training loop and its hooks, after detectron2's ``TrainerBase`` / ``HookBase``.

A trainer runs iterations ``start + 1 .. max_iter`` of ``run_step``; everything around the step
(logging, TensorBoard, checkpoints, periodic evaluation, checks) is a hook, called at fixed points::

    hook.before_train()
    for trainer.iter in range(start + 1, max_iter + 1):
        hook.before_step()
        trainer.run_step()        # calls hook.before_backward() between its forward and backward
        hook.after_step()
    hook.after_train()            # only when every iteration ran

Iterations count updates: during step ``trainer.iter`` the ``trainer.iter``-th update is made.
Hooks run in the order they were registered, on every rank of a DDP group (a hook that writes files
does so on rank 0 alone). lst's trainer and hooks: ``lst.engine.trainer.Trainer``, ``lst.engine.hooks``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence


class HookBase:
    """A hook of a ``TrainerBase``: override the methods of the points where it acts.

    ``self.trainer`` (set by ``register_hooks``) gives the run's state: ``iter``, ``start_iter``,
    ``max_iter`` and what the trainer's subclass exposes (lst's: ``model``, ``losses``, ``optimizer``...).
    """

    trainer: TrainerBase

    def before_train(self) -> None:
        """Before the first iteration of this run (after a resume: ``trainer.start_iter`` > 0)."""

    def before_step(self) -> None:
        """Before each iteration."""

    def before_backward(self) -> None:
        """After the forward of each iteration, before its backward and update: raising here leaves the
        weights as the previous iteration left them."""

    def after_step(self) -> None:
        """After each update."""

    def after_train(self) -> None:
        """After the last iteration, when training completed (an exception in the loop skips it)."""


class TrainerBase:
    """Runs ``run_step`` from ``start_iter + 1`` to ``max_iter`` with its hooks; subclasses define the step."""

    def __init__(self) -> None:
        self.hooks: list[HookBase] = []
        self.iter = self.start_iter = self.max_iter = 0

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        for hook in hooks:
            if not isinstance(hook, HookBase):
                raise TypeError(f"{hook!r} is not a HookBase")
            hook.trainer = weakref.proxy(self)  # the trainer owns its hooks, not the other way round
        self.hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.before_train()
        for self.iter in range(start_iter + 1, max_iter + 1):
            self.before_step()
            self.run_step()
            self.after_step()
        self.after_train()

    def run_step(self) -> None:
        raise NotImplementedError

    def before_train(self) -> None:
        for hook in self.hooks:
            hook.before_train()

    def before_step(self) -> None:
        for hook in self.hooks:
            hook.before_step()

    def before_backward(self) -> None:
        for hook in self.hooks:
            hook.before_backward()

    def after_step(self) -> None:
        for hook in self.hooks:
            hook.after_step()

    def after_train(self) -> None:
        for hook in self.hooks:
            hook.after_train()
