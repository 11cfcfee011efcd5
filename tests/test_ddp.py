"""DDP on the CPU: two gloo processes under torchrun train as one process with the same global batch.

The training step runs as the rules run it (``python -m lst.steps.train_base``, with torchrun for two
processes) on a dataset of eight 128 px images holding eight objects each. With eight or more objects
every image gives the same number of sampled anchors, RoIs and mask positives under the tiny preset
(128 anchors, 32 RoIs of which 8 positive), so torchvision's per-batch loss averages split exactly
into per-process averages, and 2 processes x 2 images must follow 1 process x 4 images.

Plain SGD without warm-up: its step scales with the gradient (AdamW's would hide a gradient summed
instead of averaged), and the first update is a full one. Only the first iterations can agree to
float precision: once the weights differ in the 7th digit, near-tied proposal scores swap places and
the RoI sampler keeps other RoIs, so later losses drift apart by about 1% - as much as a single
process run with 1 and with 2 threads does.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import step_command
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lst.engine.distributed import state_digest
from lst.testing import write_lvis

pytestmark = pytest.mark.ddp

ITERATIONS = 6  # half the tiny preset's, with a checkpoint every 2 (the test's time is mostly start-up)
COMPARED = 2  # iterations compared: the forward of the split batch, then the loss after one averaged update
RTOL = 1e-4  # relative difference allowed there (float32 sums in another order); a 1% larger lr gives 4e-3
SHORT = [f"train_base.iterations={ITERATIONS}", "train_base.checkpoint_period=2", "train_base.log_period=1"]
SGD = ["train_base.optimizer=sgd", "train_base.lr=0.02", "train_base.warmup_iters=0"]
COLOURS = [(230, 40, 40), (40, 200, 40), (40, 40, 230), (230, 200, 40)]


def _lvis(root: Path, split: str, image_ids: range, rng: np.random.Generator) -> Path:
    images, annotations = [], []
    for image_id in image_ids:
        pixels = np.full((128, 128, 3), 110, np.uint8)
        cells = rng.permutation(9)[:8]  # 8 objects on a 3 x 3 grid of 42 px cells
        for index, cell in enumerate(cells):
            size = int(rng.integers(18, 30))
            x = int(cell % 3 * 42 + rng.integers(2, 40 - size))
            y = int(cell // 3 * 42 + rng.integers(2, 40 - size))
            category = 1 + (index + image_id) % 4
            pixels[y : y + size, x : x + size] = COLOURS[category - 1]
            annotations.append(
                {"id": len(annotations) + 1000 * image_id, "image_id": image_id, "category_id": category,
                 "bbox": [x, y, size, size], "area": size * size,
                 "segmentation": [[x, y, x + size, y, x + size, y + size, x, y + size]]}
            )  # fmt: skip
        name = f"{split}_{image_id}.png"
        Image.fromarray(pixels).save(root / "images" / name)
        images.append({"id": image_id, "width": 128, "height": 128, "file_name": name, "neg_category_ids": [],
                       "not_exhaustive_category_ids": []})  # fmt: skip
    categories = [{"id": c, "name": f"c{c}", "frequency": "f"} for c in range(1, 5)]
    return write_lvis(root / f"{split}.json", {"images": images, "annotations": annotations, "categories": categories})


def _run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command[:6])} ... failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result.stdout + result.stderr


def _step(name: str, *overrides: str, processes: int = 1) -> list[str]:
    return step_command(name, "device=cpu", "threads=1", *overrides, processes=processes)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("ddp")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    train, val = _lvis(root, "train", range(1, 9), rng), _lvis(root, "val", range(101, 103), rng)
    common = [
        f"dataset.train_json={train}",
        f"dataset.val_json={val}",
        f"dataset.image_root={root / 'images'}",
        f"paths.data_dir={root / 'data'}",
        f"paths.split_dir={root / 'split'}",
        "phases.sizes=[4]",
    ]
    _run(_step("prepare_data", *common, f"hydra.run.dir={root / 'data'}"), root)
    _run(_step("split", *common, f"hydra.run.dir={root / 'split'}"), root)
    return root, common


def _train_command(dataset, name: str, processes: int, batch_size: int) -> tuple[Path, list[str]]:
    root, common = dataset
    run_dir = root / name
    command = _step(
        "train_base", "preset=tiny", *common, *SHORT, *SGD, f"train_base.batch_size={batch_size}",
        f"paths.model={run_dir / 'model.pt'}", f"paths.work_dir={run_dir / 'train'}", f"hydra.run.dir={run_dir}",
        "hydra.job.name=train_base", "hydra/job_logging=default", processes=processes,  # Hydra's log file too
    )  # fmt: skip
    return run_dir, command


def _train(dataset, name: str, processes: int, batch_size: int, wait: bool = True):
    root, _ = dataset
    run_dir, command = _train_command(dataset, name, processes, batch_size)
    if not wait:
        return subprocess.Popen(command, cwd=root, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    output = _run(command, root)
    return run_dir, output


def _losses(run_dir: Path) -> dict[str, np.ndarray]:
    """Every loss curve that rank 0 wrote to TensorBoard (the mean over the ranks)."""
    events = EventAccumulator(str(run_dir / "train" / "tensorboard"))
    events.Reload()
    curves = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"] if tag.startswith("loss/")}
    assert all([s.step for s in curve] == list(range(1, ITERATIONS + 1)) for curve in curves.values())
    return {tag: np.array([s.value for s in curve]) for tag, curve in curves.items()}


@pytest.fixture(scope="module")
def runs(dataset):
    one = _train(dataset, "one", processes=1, batch_size=4)
    two = _train(dataset, "two", processes=2, batch_size=4)
    return one, two


def test_two_processes_follow_one_process_with_the_same_global_batch(runs):
    (one, _), (two, _) = runs
    single, ddp = _losses(one), _losses(two)
    assert {"loss/total", "loss/loss_mask", "loss/loss_classifier", "loss/loss_objectness"} <= set(single)
    assert set(ddp) == set(single)
    for tag, curve in single.items():
        difference = np.abs(ddp[tag][:COMPARED] - curve[:COMPARED]) / np.abs(curve[:COMPARED])
        print(f"{tag}: 1 x 4 vs 2 x 2 images, iterations 1-{COMPARED}: max relative difference {difference.max():.1e}")
        np.testing.assert_allclose(ddp[tag][:COMPARED], curve[:COMPARED], rtol=RTOL, err_msg=tag)
    total = single["loss/total"]
    assert abs(total[1] - total[0]) > 100 * RTOL * total[0]  # the update moved the loss: iteration 2 tests it
    log = (two / "train_base.log").read_text()
    assert f"training {ITERATIONS} iterations of 4 images (2 per process x 2)" in log
    assert "batch-norm layers normalise over the global batch of 2 ranks" in log


def test_ranks_end_identical_and_only_rank_0_writes(runs):
    _, (two, output) = runs
    log = (two / "train_base.log").read_text()
    digests = log.split("state digests by rank: ")[1].split(" (")[0].split()
    assert len(digests) == 2
    saved = torch.load(two / "model.pt", weights_only=True)["model"]
    # rank 1's weights (its digest, gathered by rank 0) are the weights that rank 0 saved
    assert digests[0] == digests[1] == state_digest(saved)
    assert "[rank 1]" not in log  # rank 1 does not write the log file
    assert not any(name.startswith(".") for name in os.listdir(two / "train"))  # no stray temporary files


def test_every_rank_resumes_from_rank_0_checkpoint(dataset, runs):
    _, (two, _) = runs
    root, _ = dataset
    process = _train(dataset, "killed", processes=2, batch_size=4, wait=False)
    checkpoint = root / "killed" / "train" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert checkpoint.exists(), "no checkpoint before the deadline"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (root / "killed" / "model.pt").exists()

    killed, _ = _train(dataset, "killed", processes=2, batch_size=4)
    log = (killed / "train_base.log").read_text()
    resumed_at = int(log.split("resuming from ")[1].split("at iteration ")[1].split()[0])
    assert 2 <= resumed_at < ITERATIONS
    expected = torch.load(two / "model.pt", weights_only=True)["model"]
    resumed = torch.load(killed / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(value, resumed[key]) for key, value in expected.items())


def test_a_global_batch_the_processes_cannot_split_is_refused_before_training(dataset):
    run_dir, command = _train_command(dataset, "odd", processes=2, batch_size=3)
    result = subprocess.run(command, cwd=dataset[0], capture_output=True, text=True)
    assert result.returncode != 0
    assert "train_base.batch_size: 3 images per iteration (the global batch) do not split evenly across 2 " in (
        result.stdout + result.stderr
    )
    assert not (run_dir / "model.pt").exists() and not (run_dir / "train" / "last.pt").exists()
