"""The training of every phase: lst's trainer (its step, on lst.engine.train_loop) and its set-up (optimiser,
schedule, frozen stages, resume, DDP, AMP); checkpoints, logging and checks are hooks (lst.engine.hooks).

One process, or one rank of a DDP group (lst.engine.distributed): ``batch_size`` is the global batch, the
images of an iteration over all processes; each of W processes takes ``batch_size / W`` of them, rank r the
r-th slice. DistributedDataParallel averages the gradients; rank 0 alone writes checkpoints, TensorBoard
and the log file, and every rank resumes from rank 0's ``last.pt``.

The random choices inside a step (which anchors and RoIs the balanced samplers keep) are drawn per
image, from a generator keyed by (seed, iteration, the image's place in the global batch), and batch
norm covers the global batch: W processes of b images train as one process of W*b images (exactly
so when every image yields the same number of sampled anchors, RoIs and mask positives, as torchvision
averages each loss over the batch), and a resumed run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from lst.conf.schema import Optimizer, Schedule
from lst.data.dataset import SampleStream, collate
from lst.data.sampling import per_process_batch
from lst.engine import distributed
from lst.engine.hooks import (
    CallbackHook,
    FiniteLossCheck,
    PeriodicCheckpoint,
    ReplicaCheck,
    TrainingLog,
    TrainingState,
    contiguous_state,
)
from lst.engine.train_loop import HookBase, TrainerBase
from lst.errors import ConfigError, TrainingError
from lst.modeling.backbones import downsampling_stages, is_mobilenet_body
from lst.modeling.mask_rcnn import Outputs, recorded_outputs

log = logging.getLogger(__name__)


@dataclass
class Forward:
    """The student's forward of one iteration, for a method's extra loss terms: the model (not its DDP
    wrapper), the batch as loaded (flipped where its samples say) and what the forward computed on the way."""

    model: nn.Module
    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    outputs: Outputs  # the transformed batch, FPN features, RPN head outputs (lst.modeling.mask_rcnn)


# a method's extra loss terms, e.g. distillation: Forward -> named scalar losses
ExtraLosses = Callable[[Forward], dict[str, torch.Tensor]]
# a training hook: a HookBase, or (iteration, model) -> None called on every rank after each update (see ``train``)
Hook = HookBase | Callable[[int, nn.Module], None]


def backbone_stages(body: nn.Module) -> list[nn.Module]:
    """The body's stages in order: the stem, then layer1..layer4 (maskrcnn-benchmark's numbering 1-5)."""
    if hasattr(body, "conv1"):  # a torchvision ResNet: the stem is conv1 + bn1
        return [nn.ModuleList([body.conv1, body.bn1]), body.layer1, body.layer2, body.layer3, body.layer4]
    blocks = list(body.children())
    if is_mobilenet_body(blocks):  # a flat list of blocks: a stage ends before each block of stride 2
        return downsampling_stages(blocks)
    return blocks


def freeze_backbone_stages(model: nn.Module, num_stages: int) -> list[nn.Module]:
    """Freeze the first ``num_stages`` stages of the backbone body (FREEZE_CONV_BODY_AT); return them."""
    frozen = backbone_stages(model.backbone.body)[:num_stages]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return frozen


def parameter_groups(model: nn.Module, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Weights, then biases with maskrcnn-benchmark's ``bias_lr_factor`` and ``weight_decay_bias``.

    ``weight_decay_bias`` null: biases decay as the weights do. Frozen parameters are left out.
    """
    weights, biases = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (biases if name.endswith(".bias") else weights).append(parameter)
    bias_decay = cfg["weight_decay"] if cfg["weight_decay_bias"] is None else cfg["weight_decay_bias"]
    groups = [{"params": weights, "lr": cfg["lr"], "weight_decay": cfg["weight_decay"]}]
    if biases:
        groups.append({"params": biases, "lr": cfg["lr"] * cfg["bias_lr_factor"], "weight_decay": bias_decay})
    return groups


def make_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if Optimizer(cfg["optimizer"]) is Optimizer.sgd:  # a config's value is checked when it is composed
        return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"])
    return torch.optim.AdamW(groups, lr=cfg["lr"])


def lr_factor(iteration: int, cfg: dict[str, Any]) -> float:
    """Linear warm-up, then multi-step decay (the released code's) or cosine decay to zero."""
    warmup = cfg["warmup_iters"]
    factor = 1.0
    if iteration < warmup:
        alpha = iteration / warmup
        factor = cfg["warmup_factor"] * (1 - alpha) + alpha
    if Schedule(cfg["schedule"]) is Schedule.multistep:
        return factor * cfg["gamma"] ** sum(iteration >= s for s in cfg["steps"])
    progress = max(0, iteration - warmup) / max(1, cfg["iterations"] - warmup)  # cosine
    return factor * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fingerprint(*parts: Any) -> str:
    """Stable hash of what determines a run, so a checkpoint from another configuration is not resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sample_seed(*key: int | str) -> int:
    """A 63-bit seed from a key, e.g. (seed, iteration, index in the global batch)."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class KeyedSampler(BalancedPositiveNegativeSampler):
    """torchvision's balanced positive/negative sampler, drawing each image's choice from its own key.

    torchvision draws from the global RNG, image after image: the draw for an image would depend on the
    images before it in the process's batch, so splitting a batch across processes, or resuming, would
    change what is sampled. Here image i of a call uses generator seed ``keys[i]`` (set by the engine
    before each forward) mixed with this sampler's name.
    """

    def __init__(self, sampler: BalancedPositiveNegativeSampler, name: str):
        super().__init__(sampler.batch_size_per_image, sampler.positive_fraction)
        self.name = name
        self.keys: list[int] = []
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device, key: int) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device].manual_seed(sample_seed(key, self.name))

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(self.keys) != len(matched_idxs):
            raise RuntimeError(f"{self.name} sampler: {len(matched_idxs)} images but {len(self.keys)} keys")
        positives, negatives = [], []
        for key, matched in zip(self.keys, matched_idxs, strict=True):
            positive = torch.where(matched >= 1)[0]
            negative = torch.where(matched == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            generator, device = self._generator(matched.device, key), matched.device
            chosen_pos = positive[torch.randperm(positive.numel(), generator=generator, device=device)[:num_pos]]
            chosen_neg = negative[torch.randperm(negative.numel(), generator=generator, device=device)[:num_neg]]
            pos_mask = torch.zeros_like(matched, dtype=torch.uint8)
            neg_mask = torch.zeros_like(matched, dtype=torch.uint8)
            pos_mask[chosen_pos] = 1
            neg_mask[chosen_neg] = 1
            positives.append(pos_mask)
            negatives.append(neg_mask)
        return positives, negatives


@contextlib.contextmanager
def keyed_sampling(model: nn.Module) -> Iterator[Callable[[list[int]], None]]:
    """Swap the RPN's and RoI heads' samplers for keyed ones; yield the function that sets the batch's keys."""
    owners = [(module, name) for module, name in ((model.rpn, "rpn"), (model.roi_heads, "roi")) if module is not None]
    originals = [owner.fg_bg_sampler for owner, _ in owners]
    samplers = [KeyedSampler(sampler, name) for sampler, (_, name) in zip(originals, owners, strict=True)]
    for (owner, _), sampler in zip(owners, samplers, strict=True):
        owner.fg_bg_sampler = sampler

    def set_keys(keys: list[int]) -> None:
        for sampler in samplers:
            sampler.keys = keys

    try:
        yield set_keys
    finally:
        for (owner, _), sampler in zip(owners, originals, strict=True):
            owner.fg_bg_sampler = sampler


class LossStep(nn.Module):
    """The model's losses and the extra terms in one forward: the module that DDP wraps, so that the
    gradients of the extra terms are averaged with the rest."""

    def __init__(self, model: nn.Module, extra_losses: ExtraLosses | None = None):
        super().__init__()
        self.model = model
        self.extra_losses = extra_losses

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self.extra_losses is None:
            return self.model(images, targets)
        with recorded_outputs(self.model) as outputs:
            losses = self.model(images, targets)
        # a second pass that only ranks with matching images make: no batch-norm collectives in it
        with distributed.local_batchnorm():
            losses.update(self.extra_losses(Forward(self.model, images, targets, outputs)))
        return losses


class Trainer(TrainerBase):
    """lst's iteration: the next batch of this rank's share, draws keyed by the iteration, the forward of the
    model and the extra losses under autocast, the (scaled) backward, the update and the schedule's step.

    Each iteration starts in training mode (frozen stages in eval mode), whatever a hook did after the
    last. Hooks read ``model``, ``loss`` (the sum of ``losses``), ``optimizer`` and ``data_time`` (seconds
    spent waiting for the batch).
    """

    def __init__(
        self,
        model: nn.Module,
        step: nn.Module,
        loader: torch.utils.data.DataLoader,
        state: TrainingState,
        set_keys: Callable[[list[int]], None],
        frozen: list[nn.Module],
        seed: int,
        amp: str,
        device: torch.device,
    ):
        super().__init__()
        self.model, self.step, self.loader, self.set_keys, self.frozen = model, step, loader, set_keys, frozen
        self.optimizer, self.scheduler, self.scaler = state.optimizer, state.scheduler, state.scaler
        self.seed, self.amp, self.device, self.rank = seed, amp, device, distributed.rank()
        self.batches: Iterator[Any] | None = None
        self.losses: dict[str, torch.Tensor] = {}
        self.loss = torch.zeros(())
        self.data_time = 0.0

    def train_mode(self) -> None:
        self.model.train()
        for module in self.frozen:
            module.eval()

    def run_step(self) -> None:
        started = time.perf_counter()
        images, targets = self.next_batch()
        self.data_time = time.perf_counter() - started
        # every draw of this step is keyed by the iteration: the same with or without a resume
        torch.manual_seed(sample_seed(self.seed, self.iter, "rank", self.rank))
        first = self.rank * self.loader.batch_size
        self.set_keys([sample_seed(self.seed, self.iter, first + j) for j in range(len(images))])
        with distributed.autocast(self.device, self.amp):
            self.losses = self.step(images, targets)
        self.loss = sum(self.losses.values())
        self.before_backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(self.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def next_batch(self) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        if self.batches is None:
            self.batches = iter(self.loader)
        try:
            images, targets = next(self.batches)
        except StopIteration:
            raise TrainingError(f"training stopped at iteration {self.iter - 1} of {self.max_iter}") from None
        images = [image.to(self.device, non_blocking=True) for image in images]
        targets = [{key: value.to(self.device, non_blocking=True) for key, value in t.items()} for t in targets]
        return images, targets

    def after_step(self) -> None:
        super().after_step()
        self.train_mode()  # a hook may have evaluated the model


def train(
    model: nn.Module,
    stream: SampleStream,
    cfg: dict[str, Any],
    work_dir: str | Path,
    checkpoint_fields: dict[str, Any],
    seed: int,
    extra_losses: ExtraLosses | None = None,
    device: torch.device | None = None,
    hooks: Sequence[Hook] = (),
    method_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``stream`` for ``cfg['iterations']`` iterations; return the final checkpoint dict.

    ``stream`` is this process's share of the samples: ``cfg['batch_size']`` (the global batch) divided by the
    processes, per iteration. Every
    ``checkpoint_period`` iterations ``work_dir/last.pt`` holds model, optimiser, schedule (and fp16
    loss-scale) state, and the ``state_dict()`` of each of ``method_state``'s objects (a method's classification
    loss and teacher terms, lst.methods.method); a rerun with the same fingerprint resumes from it, restores
    each, and ends with the same weights. ``extra_losses(forward)`` adds a method's terms to the model's losses.
    ``cfg['amp']`` (off, bf16, fp16) and ``cfg['channels_last']`` set the precision and memory layout.

    ``hooks`` run on every rank after lst's log and before its checkpoint (lst.engine.hooks): ``HookBase``
    instances (lst.engine.train_loop), or functions ``hook(iteration, model)`` called after each update. A hook
    decides when to act (every N iterations, on rank 0 alone: the other ranks wait in their next
    collective) and may put the model in eval mode: the trainer restores training mode after the hooks.
    """
    work_dir, iterations = Path(work_dir), cfg["iterations"]
    local_batch = per_process_batch(cfg["batch_size"], distributed.world_size(), "batch_size")
    if len(stream) < iterations * local_batch:
        raise TrainingError(f"the sample stream has {len(stream)} samples, {iterations * local_batch} needed")
    run_id = run_fingerprint(cfg, checkpoint_fields, stream, seed)
    device = device or torch.device("cpu")
    amp = precision(cfg, device)
    frozen = prepare_model(model, cfg, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    # fp16 needs loss scaling against underflowing gradients; bf16 has float32's range
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    state = TrainingState(work_dir / "last.pt", run_id, model, optimizer, scheduler, scaler, method_state)
    start = state.resume()
    step = data_parallel(LossStep(model, extra_losses), device)
    loader = batches(stream, local_batch, cfg, start, device, seed)
    with keyed_sampling(model) as set_keys:
        trainer = Trainer(model, step, loader, state, set_keys, frozen, seed, amp, device)
        trainer.register_hooks([
            FiniteLossCheck(state.path),
            TrainingLog(work_dir / "tensorboard", cfg["log_period"]),
            *(hook if isinstance(hook, HookBase) else CallbackHook(hook) for hook in hooks),
            ReplicaCheck(),
            PeriodicCheckpoint(state, cfg["checkpoint_period"]),
        ])  # fmt: skip
        trainer.train_mode()
        log.info(
            "training %d iterations of %d images (%d per process x %d) from iteration %d%s", iterations,
            cfg["batch_size"], local_batch, distributed.world_size(), start,
            f", autocast {amp}" if amp != "off" else "",
        )  # fmt: skip
        trainer.train(start, iterations)
    return {"model": contiguous_state(model), "iteration": iterations, **checkpoint_fields}


def run_fingerprint(cfg: dict[str, Any], checkpoint_fields: dict[str, Any], stream: SampleStream, seed: int) -> str:
    """What the run depends on, the same on every rank: a checkpoint of any other run must not be resumed."""
    return fingerprint(
        cfg,
        checkpoint_fields.get("config"),
        checkpoint_fields.get("category_ids"),
        checkpoint_fields.get("fingerprint"),
        distributed.all_gather_object(stream.digest()),
        seed,
    )


def precision(cfg: dict[str, Any], device: torch.device) -> str:
    """``cfg['amp']`` checked for ``device``."""
    try:
        return distributed.amp_mode(cfg.get("amp", "off"), device)
    except ConfigError as error:  # the training section's amp: name the section
        raise TrainingError(f"train.{error}") from None


def prepare_model(model: nn.Module, cfg: dict[str, Any], device: torch.device) -> list[nn.Module]:
    """``model`` on ``device`` in the configured memory layout, its batch norm over the global batch,
    its first backbone stages frozen; return the frozen stages."""
    model.to(device)
    if cfg.get("channels_last", False):
        distributed.channels_last(model)
    world = distributed.world_size()
    if world > 1 and (synced := distributed.sync_batchnorm(model)):
        log.info("%d batch-norm layers normalise over the global batch of %d ranks", synced, world)
    return freeze_backbone_stages(model, cfg["freeze_backbone_stages"])


def data_parallel(step: LossStep, device: torch.device) -> nn.Module:
    """``step`` under DistributedDataParallel in a DDP group (gradients averaged over the ranks), else as is."""
    if distributed.world_size() == 1:
        return step
    return DistributedDataParallel(
        step,
        device_ids=[device] if device.type == "cuda" else None,
        forward_sync_buffers=False,  # batch norm is synchronised or frozen: the buffers agree already
        gradient_as_bucket_view=True,
    )


def batches(
    stream: SampleStream, batch_size: int, cfg: dict[str, Any], start: int, device: torch.device, seed: int
) -> torch.utils.data.DataLoader:
    """The batches of ``batch_size`` images (this process's) of iterations ``start + 1 .. cfg['iterations']``, in
    the stream's order."""
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(stream, range(start * batch_size, cfg["iterations"] * batch_size)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=cfg["num_workers"],
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        # its own generator: the loader must not draw from the global RNG, or resuming would diverge
        generator=torch.Generator().manual_seed(seed),
    )


def rank_samples(samples: pd.DataFrame, rank: int, world_size: int) -> pd.DataFrame:
    """This rank's samples of a stream split across ``world_size`` processes (columns rank, position), in order."""
    ranks = sorted(int(r) for r in samples["rank"].unique())
    if ranks != list(range(world_size)):
        raise TrainingError(
            f"the sample stream was split for {len(ranks)} training process(es) but this run has {world_size}: "
            "build it with replay.world_size equal to the processes per training job"
        )
    return samples[samples["rank"] == rank].sort_values("position", kind="stable")
