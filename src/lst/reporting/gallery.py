"""Predictions drawn on images: the same val images, ground truth then each model's masks, side by side.

The images are chosen from the data alone (``choose_images``), so every gallery of a phase shows the same
ones: a model's own (``eval/gallery.png``) and the dataset's across methods (``plots/gallery.png``). Each
model's detections are drawn from its own score threshold, the same rule for all (``f1_threshold``: its best
F1 at box IoU 0.5 on the phase's val images), since losses calibrate their scores differently.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402
from torchvision.transforms.functional import resize  # noqa: E402
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks  # noqa: E402

from lst.data import tables  # noqa: E402
from lst.data.dataset import DetectionData, load_image  # noqa: E402
from lst.data.masks import segmentation_to_mask  # noqa: E402
from lst.errors import ConfigError  # noqa: E402
from lst.io import atomic_path  # noqa: E402

PANEL = 256  # pixels of a panel's longer side
CELL = 2.8  # inches of a grid cell (DPI pixels an inch), and of the row of column titles
TITLE = 0.6  # two lines: the model, its threshold
DPI = 100
GROUND_TRUTH = "ground truth"
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # shipped with matplotlib
MATCH_IOU = 0.5  # a detection is correct at this box IoU with an unmatched object of its class


def gallery_settings(settings: dict) -> tuple[int, int]:
    """``report.gallery``'s number of images and of val images the thresholds are chosen on, checked."""
    images, f1_images = settings["images"], settings["f1_images"]
    for key, value in (("images", images), ("f1_images", f1_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"report.gallery.{key}: {value!r} is not a number of images >= 1")
    return images, f1_images


def draw_gallery(
    data: DetectionData,
    plan: pd.DataFrame,
    detections: dict[str, pd.DataFrame | Path],
    settings: dict,
    path: str | os.PathLike,
) -> dict[str, float]:
    """The gallery of ``data`` (a phase's val set; ``plan``: the phase plan) with a column per entry of
    ``detections`` (a table, or a detections.parquet file: only the images used are read) at ``path``, each
    drawn from its f1_threshold on the first ``report.gallery.f1_images`` val images (by id).
    ``settings``: ``report.gallery``. Returns each model's threshold."""
    count, f1_images = gallery_settings(settings)
    seen = plan[plan["category_id"].isin(data.category_ids)]
    image_ids = choose_images(data.annotations, seen, count)
    f1_ids = sorted(int(i) for i in data.image_ids())[:f1_images]
    thresholds = {name: f1_threshold(data, _rows_of(table, f1_ids, masks=False), f1_ids)
                  for name, table in detections.items()}  # fmt: skip
    chosen = {}
    for name, table in detections.items():
        rows = _rows_of(table, image_ids)
        chosen[f"{name}\n{threshold_text(thresholds[name])}"] = rows[rows["score"] >= thresholds[name]]
    names = dict(zip(seen["category_id"].tolist(), seen["name"], strict=True))
    write_gallery(data, chosen, names, image_ids, path)
    return thresholds


def threshold_text(threshold: float) -> str:
    """A column's caption of its threshold."""
    return f"score >= {threshold:.2f}" if np.isfinite(threshold) else "no correct detection"


def f1_threshold(data: DetectionData, detections: pd.DataFrame, image_ids: list[int]) -> float:
    """The score from which ``detections`` (DETECTIONS rows) have their best F1 on ``image_ids`` of ``data``:
    a detection is correct when its box has IoU >= MATCH_IOU with an object of its class not matched by a
    higher score (COCO's greedy matching); counted are the classes an image is verified for (annotated or
    negative, as LVIS counts them). Only the order of the scores matters: a model whose scores are another's
    rescaled monotonically gets the same boxes. Infinite when no detection is correct."""
    by_image = {int(i): rows for i, rows in detections.groupby("image_id", sort=False)}
    scores, correct, objects = [], [], 0
    for image_id in image_ids:
        truth = data.annotations_of(image_id)
        objects += len(truth)
        found = by_image.get(int(image_id))
        if found is None:
            continue
        negatives = data.images.loc[image_id, "neg_category_ids"]
        verified = set(truth["category_id"].tolist()) | set(() if negatives is None else negatives.tolist())
        found = found[found["category_id"].isin(verified)].sort_values("score", ascending=False, kind="stable")
        scores.append(found["score"].to_numpy(np.float64))
        correct.append(_matched(found, truth))
    if not scores:
        return float("inf")
    scores, correct = np.concatenate(scores), np.concatenate(correct)
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(correct[order])
    f1 = 2 * hits / (np.arange(1, len(order) + 1) + objects)
    best = int(np.argmax(f1))
    return float(scores[order][best]) if f1[best] > 0 else float("inf")


def _matched(found: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """Which of ``found`` (best score first) match an object of ``truth`` of their class, greedily."""
    hit = np.zeros(len(found), bool)
    if len(found) == 0 or len(truth) == 0:
        return hit
    iou = box_iou(_xyxy(found), _xyxy(truth)).numpy()
    iou[found["category_id"].to_numpy()[:, None] != truth["category_id"].to_numpy()[None, :]] = 0
    taken = np.zeros(len(truth), bool)
    for index in range(len(found)):
        candidates = np.where(taken, -1.0, iou[index])
        best = int(np.argmax(candidates))
        if candidates[best] >= MATCH_IOU:
            taken[best] = hit[index] = True
    return hit


def _xyxy(rows: pd.DataFrame) -> torch.Tensor:
    boxes = torch.tensor(rows[["x", "y", "w", "h"]].to_numpy(np.float64))
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def _rows_of(detections: pd.DataFrame | Path, image_ids: list[int], masks: bool = True) -> pd.DataFrame:
    """The rows of ``image_ids``, their masks too with ``masks``."""
    if isinstance(detections, pd.DataFrame):
        return detections[detections["image_id"].isin(image_ids)]
    tables.read_arrow(detections, tables.DETECTIONS, columns=["image_id"])  # the schema, checked
    columns = None if masks else [name for name in tables.DETECTIONS.names if name != "rle_counts"]
    return pq.read_table(detections, columns=columns, filters=[("image_id", "in", image_ids)]).to_pandas()


def choose_images(annotations: pd.DataFrame, categories: pd.DataFrame, count: int) -> list[int]:
    """``count`` image ids of ``annotations`` (image_id, category_id): first those showing the latest phase's
    classes, then rare ones, then the tailest (highest rank); one image per tailest class before any repeats.
    ``categories`` (phase plan rows: category_id, frequency, rank, phase) are the seen classes. Ties: image id."""
    known = annotations.merge(categories[["category_id", "frequency", "rank", "phase"]], on="category_id")
    known = known.assign(rare=known["frequency"] == "r")
    per_image = known.groupby("image_id").agg(phase=("phase", "max"), rare=("rare", "sum"), rank=("rank", "max"))
    order = per_image.reset_index().sort_values(
        ["phase", "rare", "rank", "image_id"], ascending=[False, False, False, True], kind="stable"
    )
    first = ~order["rank"].duplicated()  # the first image of each tailest class, then the others in order
    ranked = pd.concat([order[first], order[~first]])
    return [int(i) for i in ranked["image_id"].head(count)]


def colour(category_id: int) -> tuple[int, int, int]:
    """The same colour for a class in every panel."""
    red, green, blue, _ = plt.get_cmap("tab20")(int(category_id) % 20)
    return int(255 * red), int(255 * green), int(255 * blue)


def draw_panel(
    image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, labels: list[str], colours: list, size: int = PANEL
) -> torch.Tensor:
    """``image`` (uint8 3 x H x W) scaled to ``size`` on its longer side, with ``masks`` (bool N x H x W) filled
    and ``boxes`` (xyxy, image pixels) outlined and labelled, one colour each."""
    height, width = image.shape[1:]
    scale = size / max(height, width)
    shape = [max(1, round(height * scale)), max(1, round(width * scale))]
    panel = resize(image, shape, antialias=True)
    if len(masks) == 0:
        return panel
    masks = F.interpolate(masks[None].float(), size=shape, mode="nearest")[0].bool()
    panel = draw_segmentation_masks(panel, masks, alpha=0.5, colors=colours)
    return draw_bounding_boxes(panel, boxes * scale, labels, colors=colours, width=2, font=str(FONT), font_size=12,
                               label_colors="black", fill_labels=True)  # fmt: skip


def ground_truth_panel(data: DetectionData, image_id: int, image: torch.Tensor, names: dict[int, str]) -> torch.Tensor:
    """One image's annotations (of the classes ``data`` knows), labelled with their class."""
    rows = data.annotations_of(image_id)
    height, width = image.shape[1:]
    masks = [segmentation_to_mask(text, height, width) for text in rows["segmentation"]]
    return _panel(image, masks, rows, [names[c] for c in rows["category_id"].tolist()])


def detections_panel(rows: pd.DataFrame, image: torch.Tensor, names: dict[int, str]) -> torch.Tensor:
    """One image's detections (DETECTIONS rows), masks decoded from their RLEs, labelled with class and score."""
    height, width = image.shape[1:]
    masks = [mask_utils.decode({"size": [height, width], "counts": counts}) for counts in rows["rle_counts"]]
    labels = [f"{names[c]} {s:.2f}" for c, s in zip(rows["category_id"].tolist(), rows["score"], strict=True)]
    return _panel(image, masks, rows, labels)


def _panel(image: torch.Tensor, masks: list[np.ndarray], rows: pd.DataFrame, labels: list[str]) -> torch.Tensor:
    """``draw_panel`` of masks (H x W each) and the boxes (x, y, w, h columns) and classes of ``rows``."""
    height, width = image.shape[1:]
    stacked = torch.from_numpy(np.stack(masks).astype(bool)) if masks else torch.zeros((0, height, width), dtype=bool)
    boxes = rows[["x", "y", "w", "h"]].to_numpy(np.float32).reshape(-1, 4).copy()
    boxes[:, 2:] += boxes[:, :2]
    colours = [colour(c) for c in rows["category_id"].tolist()]
    return draw_panel(image, stacked, torch.from_numpy(boxes), labels, colours)


def write_gallery(
    data: DetectionData,
    detections: dict[str, pd.DataFrame],
    names: dict[int, str],
    image_ids: list[int],
    path: str | os.PathLike,
) -> None:
    """A grid of ``image_ids`` (rows) by ground truth and each model of ``detections`` (columns, titled by
    its key): its detections, at most as many as the image's objects + 5 (the best)."""
    columns = [GROUND_TRUTH, *detections]
    rows = []
    for image_id in image_ids:
        row = data.images.loc[image_id]
        image = (load_image(data.image_root / row["file_name"]) * 255).round().to(torch.uint8)
        limit = len(data.annotations_of(image_id)) + 5  # a readable panel: the best few, not 300
        row_panels = [ground_truth_panel(data, image_id, image, names)]
        for table in detections.values():
            found = table[table["image_id"] == image_id].nlargest(limit, "score")
            row_panels.append(detections_panel(found, image, names))
        rows.append(row_panels)
    save_grid(rows, columns, [f"image {i}" for i in image_ids], path)


def save_grid(rows: list[list[torch.Tensor]], columns: list[str], row_names: list[str], path: str | os.PathLike):
    """The panels as a PNG of ``len(columns)`` x ``len(rows)`` cells of CELL inches at DPI, columns titled."""
    width, height = CELL * len(columns), CELL * max(len(rows), 1) + TITLE
    figure = plt.figure(figsize=(width, height), dpi=DPI)
    axes = figure.subplots(max(len(rows), 1), len(columns), squeeze=False)
    # in inches: room for the row names on the left, the column titles on top
    figure.subplots_adjust(left=0.3 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - TITLE / height,
                           wspace=0.04, hspace=0.12)  # fmt: skip
    for column, title in enumerate(columns):
        axes[0][column].set_title(title, fontsize=11)
    for axes_row, panels, name in zip(axes, rows, row_names, strict=False):
        for axis, panel in zip(axes_row, panels, strict=True):
            axis.imshow(panel.permute(1, 2, 0).numpy())
        axes_row[0].set_ylabel(name, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if not rows:
        axes[0][0].text(0.5, 0.5, "no val images", ha="center", va="center", transform=axes[0][0].transAxes)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    plt.close(figure)
