"""The RoI classification losses at LVIS size against cross-entropy: forward + backward time and peak memory.

    python benchmarks/losses.py [--rois 8192] [--classes 1203] [--repeats 15] [--device cpu] [--threads 2]
                                [--step-seconds S | --step-images N]

Each loss of lst.losses gets the same logits (``[R, 1+C]``; Seesaw ``[R, C+2]``) and labels: a quarter of the
RoIs foreground (as the RoI sampler's positive fraction), their classes drawn by a long-tailed (Zipf) image
count; the counts are those of ``num_images`` = 100,000 training images (LVIS v1 train has 100,170). Times are
the median of ``--repeats`` calls after two warm-up calls (the stateful losses update their statistics in each),
the losses interleaved call by call.
Memory: the storages a call saves for its backward (``saved_tensors_hooks``; on any device), and on a GPU
the peak ``torch.cuda.max_memory_allocated`` over forward + backward above the inputs.
``--step-seconds``: a training step's time on the same device (gpu_check.py prints it), for the share of a step.
``--step-images N`` measures that step here instead: torchvision's R50-FPN Mask R-CNN with C + 1 outputs,
forward + backward on N random 800 x 1333 images with 8 boxes each (mean of 2 after a warm-up); the losses
then get R = 512 N RoIs, the RoIs that step samples.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from lst.losses import LOSSES, classification_loss

NUM_IMAGES = 100_000
SEESAW = "seesaw"  # its logits have the two objectness columns


def inputs(rois: int, classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image counts (long-tailed), labels (a quarter foreground) and logits ``[R, 2 + C]`` (sliced per loss)."""
    generator = torch.Generator().manual_seed(0)
    counts = (NUM_IMAGES / torch.arange(1, classes + 1, dtype=torch.float64) ** 1.1).clamp(min=1).round().long()
    labels = torch.zeros(rois, dtype=torch.long)
    foreground = torch.rand(rois, generator=generator) < 0.25
    labels[foreground] = 1 + torch.multinomial(counts.double(), int(foreground.sum()), True, generator=generator)
    logits = torch.randn(rois, classes + 2, generator=generator)
    return counts, labels.to(device), logits.to(device)


def seconds_per_call(rois: int, classes: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of one forward + backward of each loss, the losses interleaved call by call so that a
    load on the machine hits them alike."""
    counts, labels, logits = inputs(rois, classes, device)
    calls = {}
    for name in LOSSES:
        loss = classification_loss(name, classes, counts.tolist(), NUM_IMAGES).to(device)
        own = (logits if name == SEESAW else logits[:, : classes + 1]).contiguous().requires_grad_()
        calls[name] = lambda loss=loss, own=own: loss(own, labels).backward()
        for _ in range(2):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in LOSSES}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronise(device)
            start = time.perf_counter()
            call()
            synchronise(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def training_step_seconds(images: int, classes: int, device: torch.device) -> float:
    """Seconds of one forward + backward of R50-FPN Mask R-CNN on ``images`` random 800 x 1333 images."""
    generator = torch.Generator().manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                               num_classes=classes + 1).to(device).train()  # fmt: skip
    batch, targets = [], []
    for _ in range(images):
        corners = torch.rand(8, 2, generator=generator) * torch.tensor([1000.0, 500.0])
        boxes = torch.cat([corners, corners + 100 + 200 * torch.rand(8, 2, generator=generator)], 1)
        masks = torch.zeros(8, 800, 1333, dtype=torch.uint8)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist(), strict=True):
            mask[y0:y1, x0:x1] = 1
        labels = torch.randint(1, classes + 1, (8,), generator=generator)
        batch.append(torch.rand(3, 800, 1333, generator=generator).to(device))
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device), "masks": masks.to(device)})
    times = []
    for _ in range(3):
        model.zero_grad()
        start = time.perf_counter()
        sum(model(batch, targets).values()).backward()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / 2


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_mib(name: str, rois: int, classes: int, device: torch.device) -> tuple[float, float]:
    """MiB of the tensors one call saves for its backward (unique storages), and on a GPU the peak allocated
    over forward + backward above the inputs (NaN on the CPU, which has no such counter)."""
    counts, labels, logits = inputs(rois, classes, device)
    loss = classification_loss(name, classes, counts.tolist(), NUM_IMAGES).to(device)
    logits = (logits if name == SEESAW else logits[:, : classes + 1]).contiguous().requires_grad_()
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        value = loss(logits, labels)
    value.backward()
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20 if device.type == "cuda" else float("nan")
    return sum(storages.values()) / 2**20, peak


def loss_figures(rois: int, classes: int, repeats: int, device: torch.device) -> dict:
    """Seconds per forward + backward, MiB saved for backward and peak MiB (GPU) of each loss of LOSSES."""
    seconds = seconds_per_call(rois, classes, repeats, device)
    return {name: (seconds[name], *memory_mib(name, rois, classes, device)) for name in LOSSES}


def loss_lines(figures: dict, step_seconds: float | None = None) -> list[str]:
    """A Markdown table of ``figures``: time and memory, and their ratios to cross-entropy's."""
    reference_seconds, reference_saved, _ = figures["cross_entropy"]
    step = f" share of a {step_seconds:.2f} s training step |" if step_seconds else ""
    lines = ["| loss | forward + backward ms | time / cross_entropy | saved for backward MiB | memory / cross_entropy "
             f"| peak MiB (GPU) |{step}", "|---|" + "---:|" * (5 + bool(step_seconds))]  # fmt: skip
    for name, (seconds, saved, peak) in figures.items():
        share = f" {100 * seconds / step_seconds:.2f}% |" if step_seconds else ""
        lines.append(f"| {name} | {1000 * seconds:.2f} | {seconds / reference_seconds:.2f} | {saved:.1f} | "
                     f"{saved / reference_saved:.2f} | {'-' if peak != peak else f'{peak:.1f}'} |{share}")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=8192)
    parser.add_argument("--classes", type=int, default=1203)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step-seconds", type=float, default=None)
    parser.add_argument("--step-images", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.step_images:
        args.step_seconds = training_step_seconds(args.step_images, args.classes, device)
        args.rois = 512 * args.step_images
        print(f"training step (R50-FPN, {args.step_images} images of 800 x 1333): {args.step_seconds:.2f} s")
    print(f"R = {args.rois} RoIs, C = {args.classes} classes, {device}, {args.threads} threads\n")
    figures = loss_figures(args.rois, args.classes, args.repeats, device)
    print("\n".join(loss_lines(figures, args.step_seconds)))


if __name__ == "__main__":
    main()
