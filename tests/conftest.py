"""Helpers shared by the tests: running a step, the small model, the tiny LVIS datasets, cheap checkpoints.

Fixtures are found by pytest; plain helpers are imported as ``from conftest import ...`` (the tests folder
is on ``sys.path``, as for ``workflow_copy``). Data generators that the benchmarks use too live in
``lst.testing``. No test module imports another.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from workflow_copy import run_snakemake, workflow_copy

from lst.modeling.weights import torchvision_layout
from lst.testing import draw_images, write_lvis

torch.set_num_threads(1)

# the tests' model: the small backbone at 64 px, few proposals and RoIs (trains in seconds on the CPU)
SMALL = dict(
    backbone="small", small_widths=[8, 16, 16, 16], fpn_channels=16, stride_in_1x1=False, min_size=64, max_size=64,
    image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], anchor_sizes=[8, 16, 32, 64, 128],
    aspect_ratios=[0.5, 1.0, 2.0], rpn_pre_nms_top_n_train=100, rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_train=50, rpn_post_nms_top_n_test=30, rpn_batch_size_per_image=32, representation_size=32,
    mask_head_channels=8, sampling_ratio=1, cosine_scale=10.0, learn_scale=True, box_score_thresh=0.0,
    box_nms_thresh=0.5, box_detections_per_img=300, box_batch_size_per_image=16, box_positive_fraction=0.25,
)  # fmt: skip


# --------------------------------------------------------------------------- running a step


def step_command(module: str, *overrides: str, processes: int = 1) -> list[str]:
    """The command line of ``python -m lst.steps.<module> <overrides>``, under torchrun for ``processes`` > 1."""
    launcher = [sys.executable, "-m"]
    if processes > 1:
        launcher += ["torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m"]
    return [*launcher, f"lst.steps.{module}", *map(str, overrides)]


def run_step(module: str, *overrides: str) -> int:
    """Exit code of ``step_command(module, *overrides)``, run in this process (its log goes to stdout)."""
    main = importlib.import_module(f"lst.steps.{module}").main
    argv, sys.argv = sys.argv, [module, *map(str, overrides)]
    try:
        main()
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv


def printed(capfd: pytest.CaptureFixture) -> str:
    """What the test printed so far, stdout and stderr."""
    out, err = capfd.readouterr()
    return out + err


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


# --------------------------------------------------------------------------- the tiny DAG run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole DAG on the embedded dataset with the tiny preset (about 4 minutes on 2 cores): the workflow
    copy's root and snakemake's result. One run per session, shared by the end-to-end tests. lst_seesaw: a
    long-tail loss with its own base model and an extra logit, through distillation and growth."""
    root = workflow_copy(
        tmp_path_factory.mktemp("tiny"),
        preset="tiny",
        methods=["finetune", "lst", "lst_meta", "joint_rfs", "lst_seesaw"],
    )
    result = run_snakemake(root)
    return root, result


@pytest.fixture(scope="session")
def tiny_report(tiny_run) -> Path:
    """``snakemake --report report.html`` of the tiny run."""
    root, _ = tiny_run
    run_snakemake(root, "--report", "report.html")
    return root / "report.html"


# --------------------------------------------------------------------------- tiny LVIS datasets


def lvis_file(path: Path, images=None, annotations=None, categories=None) -> Path:
    """A small valid LVIS-format file; pass lists to replace parts of it."""
    data = {
        "images": images
        if images is not None
        else [
            {"id": 1, "width": 20, "height": 10, "file_name": "a.png", "neg_category_ids": [3],
             "not_exhaustive_category_ids": []},
            {"id": 2, "width": 20, "height": 10, "coco_url": "http://host/train2017/b.jpg"},
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16,
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
            {"id": 11, "image_id": 2, "category_id": 2, "bbox": [2, 2, 3, 3], "area": 9,
             "segmentation": [[2, 2, 5, 2, 5, 5, 2, 5]]},
        ],
        "categories": categories
        if categories is not None
        else [{"id": i, "name": f"c{i}", "frequency": "r"} for i in (1, 2, 3)],
    }  # fmt: skip
    return write_lvis(path, data)


@pytest.fixture
def make_lvis_file():
    return lvis_file


# A dataset of the steps' own size: images in train2017/ and val2017/ (one by coco_url), a polygon and an RLE
TINY_TRAIN = {
    "images": [
        {"id": 1, "width": 20, "height": 10, "file_name": "train2017/a.png"},
        {"id": 2, "width": 16, "height": 12, "coco_url": "http://images.cocodataset.org/train2017/b.png"},
    ],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
        {"id": 11, "image_id": 2, "category_id": 2, "bbox": [2, 2, 3, 3], "segmentation": [[2, 2, 5, 2, 5, 5, 2, 5]]},
        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [0, 0, 4, 2],
         "segmentation": {"size": [12, 16], "counts": [0, 2, 10, 2, 10, 2, 10, 2, 154]}},
    ],
    "categories": [{"id": i, "name": f"c{i}", "frequency": "r"} for i in (1, 2, 3)],
}  # fmt: skip
TINY_VAL = {
    "images": [{"id": 3, "width": 20, "height": 10, "file_name": "val2017/c.png"}],
    "annotations": [
        {"id": 20, "image_id": 3, "category_id": 1, "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}
    ],
    "categories": TINY_TRAIN["categories"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """TINY_TRAIN and TINY_VAL with their images on disk, and their prepared Parquet tables."""
    root = tmp_path_factory.mktemp("dataset")
    paths = {"train_json": write_lvis(root / "train.json", TINY_TRAIN)}
    paths["val_json"] = write_lvis(root / "val.json", TINY_VAL)
    paths["image_root"] = root / "coco"
    draw_images(paths["image_root"], TINY_TRAIN)
    draw_images(paths["image_root"], TINY_VAL)
    paths["data_dir"] = root / "data"
    code = run_step(
        "prepare_data", f"dataset.train_json={paths['train_json']}", f"dataset.val_json={paths['val_json']}",
        f"paths.data_dir={paths['data_dir']}", f"hydra.run.dir={paths['data_dir']}",
    )  # fmt: skip
    assert code == 0
    return paths


@pytest.fixture(scope="module")
def split_dir(dataset, tmp_path_factory) -> Path:
    """The tiny dataset split into phases of 2 and 1 classes."""
    out = tmp_path_factory.mktemp("split")
    args = [f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={out}", "phases.sizes=[2,1]"]
    assert run_step("split", *args, f"hydra.run.dir={out}") == 0
    return out


def train_base(dataset, split_dir, out: Path, *overrides: str) -> int:
    """The base model of the tiny dataset: 2 iterations of 1 image at 64 px, the body frozen."""
    return run_step(
        "train_base", f"paths.data_dir={dataset['data_dir']}", f"paths.split_dir={split_dir}",
        f"dataset.image_root={dataset['image_root']}", f"paths.model={out / 'model.pt'}",
        f"paths.work_dir={out / 'train'}", "paths.eval_curve=null", f"hydra.run.dir={out}", "device=cpu",
        "model.min_size=64", "model.max_size=64", "train_base.iterations=2", "train_base.batch_size=1",
        "train_base.freeze_backbone_stages=5", "train_base.warmup_iters=1", "train_base.log_period=1",
        *overrides,
    )  # fmt: skip


# --------------------------------------------------------------------------- cheap checkpoints


def cheap_state(shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """Right shapes (default: torchvision's COCO Mask R-CNN), tiny files: each tensor is one distinct value
    expanded (stride 0)."""
    shapes = torchvision_layout() if shapes is None else shapes
    return {key: torch.full((1,), float(i)).expand(shape) for i, (key, shape) in enumerate(shapes.items())}


class Payload:
    """A pickled object that, if unpickled (``weights_only=False``), prints "unpickled!" and creates ``marker``."""

    def __init__(self, marker: Path | None = None):
        self.marker = None if marker is None else str(marker)

    def __reduce__(self):
        action = "print('unpickled!')"
        if self.marker is not None:
            action += f"; open({self.marker!r}, 'w').close()"
        return (exec, (action,))
