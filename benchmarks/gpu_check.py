"""The GPU check, in one run: the paper model's training images/s in lst's loop and in a bare torchvision
loop, with amp off, bf16 and fp16; peak GPU memory; one evaluation pass. It prints its figures and puts
them in the GPU section of a RESULTS file (that section is replaced, the others kept).

    python benchmarks/gpu_check.py --out benchmarks/RESULTS.md        # one GPU, under 8 minutes
    python benchmarks/gpu_check.py --smoke --out /tmp/RESULTS.md      # any CPU, seconds (the tests run it)

Training runs, per amp mode, on the same synthetic images in the same order, batch and loader settings:

* lst: Mask R-CNN R50-FPN at 800 x 1333 of ``conf/model/resnet50_fpn.yaml`` (``lst.modeling.mask_rcnn.build_model``: the
  cosine classifier, mask weight transfer and its MLP) trained by ``lst.engine.trainer.train`` as ``train_base``
  calls it, with the ``lvis_v0.5_lst`` preset's solver (SGD; stem and res2 frozen; autocast, and a
  GradScaler for fp16, as the engine does them);
* bare: ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` with
  lst's image sizes and RPN / RoI sampling settings (for the paper model torchvision's defaults) in
  torchvision's reference loop (autocast, GradScaler for fp16, SGD); without weights torchvision gives it
  BatchNorm2d layers, all trained, where lst's body has FrozenBatchNorm2d (made for COCO weights), and
  its heads have no cosine classifier, mask weight transfer or mask MLP;
* with amp off, also lst's model in the bare loop: lst / that run is the cost of lst's loop alone.

Each run times ``--iterations`` iterations after ``--warmup`` ones (device synchronised at each), data
loading included. The evaluation pass is ``lst.evaluation.inference.detect`` (the evaluate step's inference) on
``--eval-images`` images with a fresh lst model at the incremental phases' settings (score threshold 0,
300 detections per image: the most work). Images are random noise with 3-12 elliptic polygons of 16 px
to half the image side each. ``--budget`` guards the whole check's time: a run that reaches the guard
stops (its figure is then over fewer iterations) and the runs after it are skipped; the table says so.
Last, the RoI classification losses of lst.losses at LVIS size (``benchmarks/losses.py``): forward + backward
time and peak memory against cross-entropy, and their share of lst's training step (amp off).
``--smoke`` runs the same code on the CPU: tiny images, the small demo model, 2 iterations per run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
import yaml
from losses import loss_figures, loss_lines
from PIL import Image
from train_throughput import CONF, fresh_model, train_cfg

from lst.data.dataset import DetectionData, SampleStream, collate
from lst.data.sampling import uniform_stream
from lst.engine.distributed import AMP_MODES, amp_mode
from lst.engine.trainer import train
from lst.evaluation.inference import detect
from lst.io import write_text_atomic

HEADER = "## GPU: `python benchmarks/gpu_check.py`"
# (amp, loop, model): lst = lst.engine.trainer.train on lst's model; bare = torchvision's loop
RUNS = [(amp, "lst", "lst") for amp in AMP_MODES] + [(amp, "bare", "torchvision") for amp in AMP_MODES]
RUNS.append(("off", "bare", "lst"))


# settings of lst's model config that the bare torchvision model takes too
BARE_SETTINGS = (
    "min_size", "max_size", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_batch_size_per_image",
    "box_batch_size_per_image", "box_positive_fraction",
)  # fmt: skip


class OutOfTime(Exception):
    """Raised by the step timer at the check's time guard."""


@dataclass
class Tables:
    """The synthetic dataset: DetectionData's three tables and the image folder."""

    images: pd.DataFrame
    annotations: pd.DataFrame
    categories: pd.DataFrame
    root: Path

    def data(self, num_images: int | None = None) -> DetectionData:
        images = self.images if num_images is None else self.images.iloc[:num_images]
        return DetectionData(images, self.annotations, self.categories, self.root)


@dataclass
class Setup:
    """What the runs of one check share."""

    device: torch.device
    stream: SampleStream
    num_classes: int  # outputs, background included
    model_cfg: dict
    train: dict  # lst's train_base section for a run: iterations = warm-up + timed
    warmup: int
    deadline: float  # time.monotonic() at which training stops
    end: float  # ... and evaluation


@dataclass
class Figures:
    images_per_s: float | None = None
    peak_gib: float | None = None
    note: str = ""


def synthetic_tables(root: Path, count: int, height: int, width: int, num_classes: int) -> Tables:
    """``count`` noise JPEGs with 3-12 elliptic polygon objects each, of ``num_classes`` classes."""
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        name = f"{image_id}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / name, quality=90)
        images.append({"image_id": image_id, "width": width, "height": height, "file_name": name})
        for _ in range(rng.integers(3, 13)):
            w, h = rng.uniform(16, min(height, width) / 2, size=2)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            polygon = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], axis=1)
            annotations.append(
                {"annotation_id": len(annotations) + 1, "image_id": image_id, "x": x, "y": y, "w": w, "h": h,
                 "category_id": int(rng.integers(1, num_classes + 1)),
                 "segmentation": json.dumps([polygon.ravel().round(2).tolist()])}
            )  # fmt: skip
    categories = pd.DataFrame({"category_id": np.arange(1, num_classes + 1)})
    return Tables(pd.DataFrame(images), pd.DataFrame(annotations), categories, root)


def paper_train_cfg(iterations: int, batch_size: int, workers: int) -> dict:
    """lst.yaml's train_base under the lvis_v0.5_lst preset, for a timed run: no checkpoints, no evaluation."""
    preset = yaml.safe_load((CONF / "preset" / "lvis_v0.5_lst.yaml").read_text())["train_base"]
    cfg = {**train_cfg(iterations, batch_size), **preset}
    return dict(cfg, iterations=iterations, batch_size=batch_size, num_workers=workers, checkpoint_period=10**9,
                log_period=10**9, eval_period=0)  # fmt: skip


class StepTimer:
    """A training hook: when each iteration ended (device synchronised); stops the run at the deadline."""

    def __init__(self, device: torch.device, deadline: float):
        self.device, self.deadline = device, deadline
        self.marks: list[float] = []

    def __call__(self, iteration: int, model: torch.nn.Module) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks.append(time.perf_counter())
        if time.monotonic() > self.deadline:
            raise OutOfTime

    def images_per_s(self, warmup: int, batch_size: int) -> float | None:
        timed = len(self.marks) - warmup
        return batch_size * timed / (self.marks[-1] - self.marks[warmup - 1]) if timed > 0 else None


def full_mask_collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Full-image masks, as torchvision's reference datasets give them (lst keeps polygons instead)."""
    images, targets = collate(batch)
    for target in targets:
        target["masks"] = target.pop("instance_masks").full_masks()
    return images, targets


def bare_loop(model: torch.nn.Module, setup: Setup, amp: str, timer: StepTimer) -> None:
    """torchvision's reference training loop (references/detection): autocast, GradScaler for fp16, SGD."""
    cfg, device = setup.train, setup.device
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(setup.stream, range(cfg["iterations"] * cfg["batch_size"])),
        batch_size=cfg["batch_size"], collate_fn=full_mask_collate, num_workers=cfg["num_workers"],
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    for iteration, (images, targets) in enumerate(loader, start=1):
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{key: value.to(device, non_blocking=True) for key, value in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=dtype, enabled=amp != "off"):
            loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        timer(iteration, model)


def build(setup: Setup, which: str, **model_changes) -> torch.nn.Module:
    """lst's model (with ``model_changes``) or torchvision's, from seed 0, on the check's device."""
    if which == "lst":
        return fresh_model({**setup.model_cfg, **model_changes}, setup.num_classes).to(setup.device)
    # lst's image sizes and training samplers (for the paper model, torchvision's defaults)
    shared = {key: setup.model_cfg[key] for key in BARE_SETTINGS}
    torch.manual_seed(0)
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=setup.num_classes, **shared
    ).to(setup.device)


def unavailable(setup: Setup, amp: str, deadline: float) -> str:
    """Why a run cannot happen on this device or before ``deadline``; empty if it can."""
    try:
        amp_mode(amp, setup.device)
    except ValueError as error:
        return str(error).removeprefix("amp: ")
    return "skipped by the time guard" if time.monotonic() > deadline else ""


def timed_run(setup: Setup, amp: str, loop: str, which: str) -> Figures:
    """Images/s and peak memory of one training run."""
    if note := unavailable(setup, amp, setup.deadline):
        return Figures(note=note)
    model = build(setup, which)
    timer = StepTimer(setup.device, setup.deadline)
    reset_peak(setup.device)
    note = ""
    try:
        if loop == "lst":
            with tempfile.TemporaryDirectory() as work_dir:
                cfg, fields = dict(setup.train, amp=amp), {"category_ids": list(range(1, setup.num_classes))}
                train(model, setup.stream, cfg, work_dir, fields, seed=0, device=setup.device, hooks=[timer])
        else:
            bare_loop(model, setup, amp, timer)
    except OutOfTime:
        note = f"stopped by the time guard after {len(timer.marks)} iterations"
    figures = Figures(timer.images_per_s(setup.warmup, setup.train["batch_size"]), peak_gib(setup.device), note)
    del model
    release(setup.device)
    return figures


def evaluation(setup: Setup, tables: Tables, amp: str, num_images: int, batch_size: int) -> tuple[Figures, float]:
    """Images/s and peak memory of lst.evaluation.inference.detect on ``num_images`` images, after one warm-up batch;
    detections per image."""
    if note := unavailable(setup, amp, setup.end):
        return Figures(note=note), float("nan")
    model = build(setup, "lst", box_score_thresh=0.0, box_detections_per_img=300)
    detect(model, tables.data(batch_size), batch_size, amp=amp)
    reset_peak(setup.device)
    started = time.perf_counter()
    detections = detect(model, tables.data(num_images), batch_size, amp=amp)  # ends with results on the CPU
    figures = Figures(num_images / (time.perf_counter() - started), peak_gib(setup.device))
    del model
    release(setup.device)
    return figures, len(detections) / num_images


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- the report -----------------------------------------------------------------------------------------

LOOPS = {"lst": "lst.engine.trainer.train", "bare": "bare torchvision loop"}


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def environment(device: torch.device) -> str:
    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    if device.type != "cuda":
        return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), {versions}"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, {versions}"


def ratios(training: dict[tuple[str, str, str], Figures]) -> list[str]:
    """lst / bare images/s per amp mode, and lst's loop against the bare loop on lst's model."""
    pairs = {f"lst / bare, amp {amp}": ((amp, "lst", "lst"), (amp, "bare", "torchvision")) for amp in AMP_MODES}
    pairs["lst's loop / the bare loop, both on lst's model, amp off"] = (("off", "lst", "lst"), ("off", "bare", "lst"))
    lines = []
    for label, (ours, reference) in pairs.items():
        rate, reference_rate = training[ours].images_per_s, training[reference].images_per_s
        lines.append(f"- {label}: {number(rate / reference_rate, 3) if rate and reference_rate else '-'}")
    return lines


def report(cfg: dict, setup: Setup, training: dict, evals: dict, losses: dict, seconds: float) -> str:
    lines = [
        HEADER,
        "",
        f"{datetime.date.today()}: {environment(setup.device)}. Model `conf/model/{cfg['model']}.yaml` at "
        f"{cfg['height']} x {cfg['width']} px, {setup.num_classes} outputs, batch {cfg['batch_size']}, "
        f"{cfg['warmup']} warm-up + {cfg['iterations']} timed iterations per run, data loading "
        f"({cfg['workers']} workers) included; {cfg['images']} synthetic noise images with 3-12 objects each.",
        "",
        "| training loop | model | amp | images/s | peak GPU memory GiB | note |",
        "|---|---|---|---:|---:|---|",
    ]
    models = {"lst": f"lst.modeling.mask_rcnn {cfg['model']}", "torchvision": "torchvision maskrcnn_resnet50_fpn"}
    for (amp, loop, which), figures in training.items():
        lines.append(f"| {LOOPS[loop]} | {models[which]} | {amp} | {number(figures.images_per_s)} | "
                     f"{number(figures.peak_gib, 1)} | {figures.note} |")  # fmt: skip
    lines += ["", *ratios(training), "", "How the two models differ: the docstring of benchmarks/gpu_check.py.", ""]
    rate = training[AMP_MODES[0], "lst", "lst"].images_per_s
    lines += [
        f"For the workflow config (docs/cluster.md): `gpu_jobs.seconds_per_image.{cfg['model']}` = "
        f"{number(1 / rate if rate else None, 3)} s per training image on this GPU (lst's loop, amp off, batch "
        f"{cfg['batch_size']}).",
        "",
    ]
    lines += [
        f"Evaluation pass (`lst.evaluation.inference.detect`, {cfg['eval_images']} images, batch {cfg['eval_batch']}, "
        "score threshold 0, up to 300 detections per image, masks encoded as RLE on the CPU):",
        "",
        "| amp | images/s | detections/image | peak GPU memory GiB | note |",
        "|---|---:|---:|---:|---|",
    ]
    for amp, (figures, per_image) in evals.items():
        lines.append(f"| {amp} | {number(figures.images_per_s)} | {number(per_image, 0)} | "
                     f"{number(figures.peak_gib, 1)} | {figures.note} |")  # fmt: skip
    step_seconds = cfg["batch_size"] / rate if rate else None
    lines += [
        "",
        f"The RoI classification losses (`benchmarks/losses.py`, R = {cfg['loss_rois']} RoIs, "
        f"C = {cfg['loss_classes']} classes; the share is of lst's step, amp off, batch {cfg['batch_size']}, "
        f"which samples {512 * cfg['batch_size']} RoIs: an upper bound where R is more):",
        "",
    ]
    lines += loss_lines(losses, step_seconds)
    lines += ["", f"Whole check: {seconds:.0f} s (time guard {cfg['budget']:.0f} s)."]
    return "\n".join(lines) + "\n"


def replace_section(path: Path, section: str) -> None:
    """Put ``section`` in place of the file's section under HEADER (up to the next "## "), or at its end."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    if HEADER + "\n" in lines:
        start = lines.index(HEADER + "\n")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        after = ["\n", *lines[end:]] if end < len(lines) else []
        lines = [*lines[:start], section, *after]
    else:
        lines = [*lines, "\n" if lines else "", section]
    write_text_atomic(path, "".join(lines))


# --- the check ------------------------------------------------------------------------------------------

FULL = dict(
    device="cuda", model="resnet50_fpn", height=800, width=1333, batch_size=8, warmup=5, iterations=20, images=16,
    classes=270, workers=4, eval_images=8, eval_batch=2, eval_reserve=90.0, budget=450.0, loss_rois=8192,
    loss_classes=1203,
)  # fmt: skip
SMOKE = dict(
    device="cpu", model="small", height=96, width=128, batch_size=2, warmup=1, iterations=1, images=4, classes=3,
    workers=0, eval_images=2, eval_batch=2, eval_reserve=0.0, budget=600.0, loss_rois=64, loss_classes=5,
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="the RESULTS file whose GPU section to replace (default: print only)")
    parser.add_argument("--smoke", action="store_true", help="a CPU run: tiny images, the small model, 2 iterations")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    for key, value in FULL.items():
        smoke = SMOKE[key]
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=type(value), help=f"default {value} ({smoke} with --smoke)"
        )
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    cfg = {key: default if getattr(args, key) is None else getattr(args, key) for key, default in defaults.items()}
    if cfg["device"].startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: the check needs a GPU (--smoke runs it on the CPU)")
    return args, cfg


def make_setup(cfg: dict, tables: Tables, started: float) -> Setup:
    device = torch.device(cfg["device"])
    model_cfg = yaml.safe_load((CONF / "model" / f"{cfg['model']}.yaml").read_text())
    model_cfg.update(min_size=min(cfg["height"], cfg["width"]), max_size=max(cfg["height"], cfg["width"]))
    iterations = cfg["warmup"] + cfg["iterations"]
    data = tables.data()
    stream = SampleStream(data, uniform_stream(data.image_ids(), iterations, cfg["batch_size"], seed=0))
    train = paper_train_cfg(iterations, cfg["batch_size"], cfg["workers"])
    end = started + cfg["budget"]
    return Setup(device, stream, 1 + cfg["classes"], model_cfg, train, cfg["warmup"], end - cfg["eval_reserve"], end)


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    args, cfg = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tables = synthetic_tables(Path(tmp), cfg["images"], cfg["height"], cfg["width"], cfg["classes"])
        setup = make_setup(cfg, tables, started)
        training = {}
        for amp, loop, which in RUNS:
            training[amp, loop, which] = timed_run(setup, amp, loop, which)
            print(f"trained: {LOOPS[loop]}, {which} model, amp {amp}: {training[amp, loop, which]}", flush=True)
        evals = {amp: evaluation(setup, tables, amp, cfg["eval_images"], cfg["eval_batch"]) for amp in AMP_MODES}
    losses = loss_figures(cfg["loss_rois"], cfg["loss_classes"], 5, setup.device)
    text = report(cfg, setup, training, evals, losses, time.monotonic() - started)
    print(text, end="")
    if args.out:
        replace_section(args.out, text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
