"""lst's training loop against a bare torchvision loop: images/s on the CPU, in one run.

    python benchmarks/train_throughput.py [--iterations 40] [--warmup 5] [--rounds 2] [--threads 2]

Both train the demo preset's model (the small Mask R-CNN, 128 px, lst.yaml's train_base settings:
AdamW, batch 8) from the same initial weights on the same embedded demo images, in the same order,
through the same dataset class. The bare loop is
``for images, targets in loader: loss = sum(model(images, targets).values()); loss.backward(); opt.step()``
(plus zero_grad, and lst's learning-rate schedule: the same optimisation); lst's is ``lst.engine.trainer.train``
as a step calls it (schedule, keyed sampling, loss checks, logging, TensorBoard, checkpoints).

The CPU may be shared with other work, so the two loops are interleaved step by step: a training hook
of lst's run makes one bare iteration after each lst iteration, and the time between hooks is lst's.
Load changes then hit both loops alike. Steady state leaves out the first ``--warmup`` iterations; the
whole-run figure charges lst with its set-up and its final checkpoint as well. Goals: lst / bare >= 0.95;
lst's data loading (its own log's figure, from a separate plain run) < 10% of its step time.

The two models drift apart (torchvision's sampler draws from the global RNG, lst's per image), and with
them the work of a step (NMS on more or fewer boxes, more or fewer mask positives). ``--same-draws``
gives the bare model lst's keyed samplers and keys, so that both train to the same weights and the
difference left is the loop's own overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from lst.data.dataset import DetectionData, SampleStream, collate
from lst.data.demo import generate_demo
from lst.data.lvis_json import read_lvis_json
from lst.data.sampling import uniform_stream
from lst.engine.trainer import keyed_sampling, lr_factor, make_optimizer, sample_seed, train
from lst.modeling.mask_rcnn import build_model

CONF = Path(__file__).resolve().parents[1] / "src" / "lst" / "conf"


def demo_data(root: Path) -> DetectionData:
    paths = generate_demo(root / "demo")
    tables = read_lvis_json(paths["train_json"], "train")
    categories = tables.categories.to_pandas().sort_values("category_id")
    return DetectionData(tables.images.to_pandas(), tables.annotations.to_pandas(), categories, paths["image_root"])


def train_cfg(iterations: int, batch_size: int) -> dict:
    """lst.yaml's train_base section (the demo preset trains with it), for ``iterations``."""
    cfg = yaml.safe_load((CONF / "lst.yaml").read_text())["train_base"]
    return dict(cfg, iterations=iterations, batch_size=batch_size)


def fresh_model(model_cfg: dict, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_cfg, num_classes)


class DataShare(logging.Handler):
    """The data-loading share of the step time in lst's last progress line."""

    share = float("nan")

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"\(data ([\d.]+)%\)", record.getMessage())
        if found:
            self.share = float(found.group(1))


def interleaved(
    data, stream, model_cfg: dict, cfg: dict, work_dir: Path, warmup: int, same_draws: bool
) -> dict[str, float]:
    """One lst run with a bare iteration after each of its iterations; seconds of each side."""
    num_classes = 1 + len(data.category_ids)
    bare = fresh_model(model_cfg, num_classes)
    bare_optimizer = make_optimizer(bare, cfg)
    bare_schedule = torch.optim.lr_scheduler.LambdaLR(bare_optimizer, lambda it: lr_factor(it, cfg))
    bare_batches = iter(
        torch.utils.data.DataLoader(
            torch.utils.data.Subset(stream, range(cfg["iterations"] * cfg["batch_size"])),
            batch_size=cfg["batch_size"],
            collate_fn=collate,
        )
    )
    bare.train()
    marks: list[tuple[float, float]] = []  # (enter, leave) of each hook: the bare iteration
    draws = keyed_sampling(bare) if same_draws else contextlib.nullcontext(lambda keys: None)
    set_keys = draws.__enter__()

    def bare_iteration(iteration: int, model: torch.nn.Module) -> None:
        enter = time.perf_counter()
        images, targets = next(bare_batches)
        set_keys([sample_seed(0, iteration, j) for j in range(len(images))])  # lst's keys (seed 0, one rank)
        loss = sum(bare(images, targets).values())
        bare_optimizer.zero_grad()
        loss.backward()
        bare_optimizer.step()
        bare_schedule.step()
        marks.append((enter, time.perf_counter()))

    model = fresh_model(model_cfg, num_classes)
    started = time.perf_counter()
    train(model, stream, cfg, work_dir, {"category_ids": data.category_ids.tolist()}, seed=0, hooks=[bare_iteration])
    wall = time.perf_counter() - started
    draws.__exit__(None, None, None)
    if same_draws:  # the point of the option: both loops did the same work
        assert all(torch.equal(v, bare.state_dict()[k]) for k, v in model.state_dict().items())
    bare_times = [leave - enter for enter, leave in marks]
    lst_times = [marks[i][0] - marks[i - 1][1] for i in range(1, len(marks))]  # iterations 2..N
    return {
        "lst_steady": sum(lst_times[warmup - 1 :]),
        "bare_steady": sum(bare_times[warmup:]),
        "steady_iterations": len(bare_times) - warmup,
        "lst_whole": wall - sum(bare_times),
        "bare_whole": sum(bare_times),
    }


def plain_lst(data, stream, model_cfg: dict, cfg: dict, work_dir: Path) -> tuple[float, float]:
    """Images/s of an lst run on its own, and the data-loading share its log reports."""
    handler = DataShare()
    logging.getLogger("lst.engine.trainer").addHandler(handler)
    model = fresh_model(model_cfg, 1 + len(data.category_ids))
    started = time.perf_counter()
    train(model, stream, cfg, work_dir, {"category_ids": data.category_ids.tolist()}, seed=0)
    elapsed = time.perf_counter() - started
    logging.getLogger("lst.engine.trainer").removeHandler(handler)
    return cfg["iterations"] * cfg["batch_size"] / elapsed, handler.share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=40, help="iterations of each interleaved run")
    parser.add_argument("--warmup", type=int, default=5, help="first iterations left out of the steady state")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--same-draws", action="store_true", help="the bare loop samples as lst does")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lst.engine.trainer").setLevel(logging.INFO)
    logging.getLogger("lst.engine.trainer").propagate = False  # progress lines are parsed, not printed

    model_cfg = yaml.safe_load((CONF / "model" / "small.yaml").read_text())
    batch = args.batch_size
    cfg = train_cfg(args.iterations, batch)
    with tempfile.TemporaryDirectory() as tmp:
        data = demo_data(Path(tmp))
        stream = SampleStream(data, uniform_stream(data.image_ids(), args.iterations, batch))
        print(
            f"demo data: {len(data.image_ids())} images of 128 px, batch {batch}, {args.threads} threads, "
            f"{args.rounds} interleaved runs of {args.iterations} iterations (steady state after {args.warmup})"
            + (", same draws in both loops" if args.same_draws else "")
        )
        rounds = []
        for index in range(args.rounds):
            result = interleaved(data, stream, model_cfg, cfg, Path(tmp) / f"run{index}", args.warmup, args.same_draws)
            rounds.append(result)
            steady, whole = result["steady_iterations"] * batch, args.iterations * batch
            print(
                f"run {index + 1}: steady lst {steady / result['lst_steady']:.2f} images/s, "
                f"bare {steady / result['bare_steady']:.2f} images/s; whole run lst "
                f"{whole / result['lst_whole']:.2f}, bare {whole / result['bare_whole']:.2f}"
            )
        plain_rate, share = plain_lst(data, stream, model_cfg, train_cfg(20, batch), Path(tmp) / "plain")
    steady_images = sum(r["steady_iterations"] for r in rounds) * batch
    lst_rate = steady_images / sum(r["lst_steady"] for r in rounds)
    bare_rate = steady_images / sum(r["bare_steady"] for r in rounds)
    whole_ratio = statistics.fmean(r["bare_whole"] / r["lst_whole"] for r in rounds)
    ratio = lst_rate / bare_rate
    print(f"lst training loop:   {lst_rate:.2f} images/s (steady state, all runs)")
    print(f"bare torchvision:    {bare_rate:.2f} images/s")
    print(f"ratio lst / bare:    {ratio:.3f}  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    print(f"whole runs:          {whole_ratio:.3f}  (lst's set-up and final checkpoint included)")
    print(f"lst data loading:    {share:.1f}% of the step time  (goal < 10%: {'met' if share < 10 else 'NOT met'})")
    print(f"lst alone:           {plain_rate:.2f} images/s (20 iterations, set-up included)")


if __name__ == "__main__":
    main()
