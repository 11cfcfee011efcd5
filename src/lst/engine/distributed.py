"""How a training process runs: alone or as one rank of a DDP group, on which device, in which precision.

A step run by ``torchrun --nproc_per_node=N`` finds RANK / WORLD_SIZE / LOCAL_RANK in its environment
and joins a process group (nccl on GPUs, one GPU per rank; gloo on the CPU); without them it is the
single process it always was. Rank 0 is the one that writes (checkpoints, logs to file, TensorBoard,
outputs); the other ranks log warnings and errors only.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lst.conf.schema import Amp, choices
from lst.errors import ConfigError

log = logging.getLogger(__name__)

AMP_MODES = choices(Amp)
# the other ranks wait in the next collective while rank 0 runs a periodic evaluation over the whole val set
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; or any torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device: {name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


@contextlib.contextmanager
def launch(device_name: str = "auto") -> Iterator[Context]:
    """Join torchrun's process group for the duration of a step (or run alone without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world == 1 or dist.is_initialized():
        yield Context(rank(), world_size(), device)
        return
    process_rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    _die_with_launcher()
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"device={device_name}: with {world} processes, rank r takes cuda:<local rank>; use auto")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"{world} processes on this node but {torch.cuda.device_count()} GPU(s): one each")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    _quiet_unless_main(process_rank)
    log.info("rank %d of %d on %s (%s)", process_rank, world, device, dist.get_backend())
    try:
        yield Context(process_rank, world, device)
    finally:
        dist.destroy_process_group()


def _die_with_launcher() -> None:
    """End this rank when torchrun ends, even by SIGKILL: torchrun starts each rank in a session of its own,
    so a killed job (or a killed snakemake) would otherwise leave ranks training and writing on."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before the line above
        os._exit(1)


def _quiet_unless_main(process_rank: int) -> None:
    """Ranks other than 0 write no log file and print warnings and errors only (with their rank)."""
    if process_rank == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
        else:
            handler.setFormatter(logging.Formatter(f"[rank {process_rank}] %(levelname)s %(name)s: %(message)s"))
    root.setLevel(logging.WARNING)
    logging.getLogger("lst").setLevel(logging.WARNING)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (``[value]`` when alone)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each value averaged over the ranks (for logging: the loss of the global batch, not rank 0's share)."""
    values = {key: value.detach().float() for key, value in values.items()}
    if not dist.is_initialized() or not values:
        return values
    stacked = torch.stack(list(values.values()))
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / dist.get_world_size(), strict=True))


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and values of a state dict (identifies a replica's weights)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# --- batch norm over the global batch ---------------------------------------------------------------

_local_batchnorm = False


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of every rank, on GPUs and CPUs.

    torch's SyncBatchNorm refuses CPU tensors, and DDP's gloo path is how multi-process training is
    tested here; this one all-reduces differentiable sums instead. With it, W ranks of b images
    normalise as one process of W*b images. The state dict is BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and not _local_batchnorm):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = (1, channels) + (1,) * (x.dim() - 2)
        # two passes (mean, then centred squares) are as exact as the single-process BatchNorm
        sums = all_reduce_sum(torch.cat([x.sum(dims), x.new_tensor([x.numel() / channels])]))
        count = sums[channels].detach()
        mean = sums[:channels] / count
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.pow(2).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / max(float(count) - 1, 1.0), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the gradient of each rank's input is the sum of the ranks' output gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks, with gradients."""
    return _AllReduceSum.apply(tensor)


@contextlib.contextmanager
def local_batchnorm() -> Iterator[None]:
    """Plain per-rank batch norm inside, for forward passes that not every rank makes (extra losses)."""
    global _local_batchnorm
    previous, _local_batchnorm = _local_batchnorm, True
    try:
        yield
    finally:
        _local_batchnorm = previous


def sync_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm2d of ``model`` by SyncBatchNorm2d (same parameters and buffers); return how many."""
    replaced = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                synced = SyncBatchNorm2d(
                    child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
                )
                synced.weight, synced.bias = child.weight, child.bias  # the same Parameters: optimiser, freezing
                for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                    setattr(synced, buffer, getattr(child, buffer))
                synced.train(child.training)
                setattr(parent, name, synced)
                replaced += 1
    return replaced


# --- mixed precision ---------------------------------------------------------------------------------


def amp_mode(value: Any, device: torch.device) -> str:
    """The ``amp`` option (``lst.conf.schema.Amp``: off, bf16 or fp16) checked for ``device``: fp16 needs a GPU.
    YAML reads a bare ``off`` as false."""
    mode = Amp("off" if value in (False, None) else value).name
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError(f"amp: fp16 needs a CUDA device (this run is on {device}); use bf16 or off on the CPU")
    return mode


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """torch.autocast for ``mode`` (a no-op when off)."""
    if mode == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def channels_last(model: nn.Module) -> nn.Module:
    """Convolution weights in channels-last layout (NHWC), which tensor cores and oneDNN prefer."""
    return model.to(memory_format=torch.channels_last)
