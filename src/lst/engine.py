"""The training loop shared by every phase: optimiser, schedule, checkpoints, resume, logging."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from lst.checkpoint import load_checkpoint, save_checkpoint
from lst.dataset import SampleStream, collate

log = logging.getLogger(__name__)

# (model, images, targets) -> extra loss terms, e.g. distillation
ExtraLosses = Callable[[nn.Module, list[torch.Tensor], list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]


class TrainingError(RuntimeError):
    pass


def backbone_stages(body: nn.Module) -> list[nn.Module]:
    """The body's stages in order: the stem, then layer1..layer4 (maskrcnn-benchmark's numbering 1-5)."""
    if hasattr(body, "conv1"):  # a torchvision ResNet: the stem is conv1 + bn1
        return [nn.ModuleList([body.conv1, body.bn1]), body.layer1, body.layer2, body.layer3, body.layer4]
    return list(body.children())


def freeze_backbone_stages(model: nn.Module, num_stages: int) -> list[nn.Module]:
    """Freeze the first ``num_stages`` stages of the backbone body (FREEZE_CONV_BODY_AT); return them."""
    frozen = backbone_stages(model.backbone.body)[:num_stages]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return frozen


def make_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"train.optimizer: unknown optimizer {cfg['optimizer']!r} (sgd or adamw)")


def lr_factor(iteration: int, cfg: dict[str, Any]) -> float:
    """Linear warm-up, then multi-step decay (the seed's) or cosine decay to zero."""
    warmup = cfg["warmup_iters"]
    factor = 1.0
    if iteration < warmup:
        alpha = iteration / warmup
        factor = cfg["warmup_factor"] * (1 - alpha) + alpha
    if cfg["schedule"] == "multistep":
        return factor * cfg["gamma"] ** sum(iteration >= s for s in cfg["steps"])
    if cfg["schedule"] == "cosine":
        progress = max(0, iteration - warmup) / max(1, cfg["iterations"] - warmup)
        return factor * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"train.schedule: unknown schedule {cfg['schedule']!r} (multistep or cosine)")


def fingerprint(*parts: Any) -> str:
    """Stable hash of what determines a run, so a checkpoint from another configuration is not resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _format_eta(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def train(
    model: nn.Module,
    stream: SampleStream,
    cfg: dict[str, Any],
    work_dir: str | Path,
    checkpoint_fields: dict[str, Any],
    seed: int,
    extra_losses: ExtraLosses | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``stream`` for ``cfg['iterations']`` iterations; return the final checkpoint dict.

    Every ``checkpoint_period`` iterations ``work_dir/last.pt`` holds model, optimiser, schedule and
    RNG state; a rerun with the same fingerprint resumes from it and ends with the same weights.
    """
    work_dir = Path(work_dir)
    last_path = work_dir / "last.pt"
    iterations, batch_size = cfg["iterations"], cfg["batch_size"]
    if len(stream) < iterations * batch_size:
        raise TrainingError(f"the sample stream has {len(stream)} samples, {iterations * batch_size} needed")
    # what the run depends on: a checkpoint of any other run must not be resumed
    run_id = fingerprint(
        cfg,
        checkpoint_fields.get("config"),
        checkpoint_fields.get("category_ids"),
        checkpoint_fields.get("fingerprint"),
        stream.digest(),
        seed,
    )

    device = device or torch.device("cpu")
    model.to(device)
    frozen = freeze_backbone_stages(model, cfg["freeze_backbone_stages"])
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    torch.manual_seed(seed)
    start = 0
    if last_path.exists():
        state = load_checkpoint(last_path, required=("model", "optimizer", "scheduler", "rng", "iteration"))
        if state.get("run_id") == run_id:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start = int(state["iteration"])
            log.info("resuming from %s at iteration %d", last_path, start)
        else:
            log.warning("%s was made with another configuration: training from the start", last_path)

    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(stream, range(start * batch_size, iterations * batch_size)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=cfg["num_workers"],
        collate_fn=collate,
        # its own generator: the loader must not draw from the global RNG, or resuming would diverge
        generator=torch.Generator().manual_seed(seed),
    )
    writer = SummaryWriter(str(work_dir / "tensorboard"), purge_step=start)

    def snapshot(iteration: int) -> None:
        save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "iteration": iteration,
                "run_id": run_id,
            },
            last_path,
        )

    model.train()
    for module in frozen:
        module.eval()
    log.info("training %d iterations of %d images from iteration %d", iterations, batch_size, start)
    started, data_time, tick = time.perf_counter(), 0.0, time.perf_counter()
    iteration = start
    for iteration, (images, targets) in enumerate(loader, start=start + 1):
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{key: value.to(device, non_blocking=True) for key, value in t.items()} for t in targets]
        data_time += time.perf_counter() - tick
        losses = model(images, targets)
        if extra_losses is not None:
            losses.update(extra_losses(model, images, targets))
        total = sum(losses.values())
        if not torch.isfinite(total):
            terms = {k: round(float(v), 4) for k, v in losses.items()}
            raise TrainingError(
                f"iteration {iteration}: the loss is not finite ({terms}); the last good checkpoint is {last_path}"
            )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()

        if iteration % cfg["log_period"] == 0 or iteration == iterations:
            losses, total = {k: v.detach() for k, v in losses.items()}, total.detach()
            elapsed = time.perf_counter() - started
            per_iteration = elapsed / (iteration - start)
            terms = "  ".join(f"{k.removeprefix('loss_')} {float(v):.3f}" for k, v in losses.items())
            log.info(
                "iter %d/%d  loss %.3f  (%s)  lr %.2e  %.2f s/it (data %.0f%%)  eta %s",
                iteration, iterations, float(total), terms, optimizer.param_groups[0]["lr"], per_iteration,
                100 * data_time / elapsed, _format_eta(per_iteration * (iterations - iteration)),
            )  # fmt: skip
            writer.add_scalar("loss/total", float(total), iteration)
            for key, value in losses.items():
                writer.add_scalar(f"loss/{key}", float(value), iteration)
            writer.add_scalar("lr", optimizer.param_groups[0]["lr"], iteration)
        if iteration % cfg["checkpoint_period"] == 0 and iteration < iterations:
            snapshot(iteration)
        tick = time.perf_counter()
    writer.close()
    if iteration != iterations:
        raise TrainingError(f"training stopped at iteration {iteration} of {iterations}")
    snapshot(iterations)
    return {"model": model.state_dict(), "iteration": iterations, **checkpoint_fields}
