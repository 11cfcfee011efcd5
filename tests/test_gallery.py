"""The prediction gallery: which images, where a drawn mask lands, the grid, the settings."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from lst.data import tables
from lst.data.phase_data import load_phase_plan, phase_data
from lst.errors import ConfigError
from lst.reporting import gallery

# classes 1, 2 in phase 0, 3..5 in phase 1 (the tail: 4 and 5 rare)
CATEGORIES = pd.DataFrame(
    {"category_id": [1, 2, 3, 4, 5], "frequency": list("fccrr"), "rank": [1, 2, 3, 4, 5], "phase": [0, 0, 1, 1, 1]}
)
# image: its classes (9 is no seen class)
IMAGES = {10: [1], 11: [3], 12: [4], 13: [5, 1], 14: [2], 15: [5], 16: [9]}


def _annotations(images=IMAGES) -> pd.DataFrame:
    pairs = [(image, category) for image, categories in images.items() for category in categories]
    return pd.DataFrame(pairs, columns=["image_id", "category_id"])


def test_images_with_the_last_phases_and_rare_classes_come_first():
    # phase 1 before phase 0; then rare; then the tailest class; one image per tailest class before 15
    assert gallery.choose_images(_annotations(), CATEGORIES, 10) == [13, 12, 11, 14, 10, 15]
    assert gallery.choose_images(_annotations(), CATEGORIES, 2) == [13, 12]
    shuffled = _annotations().sample(frac=1, random_state=3)
    assert gallery.choose_images(shuffled, CATEGORIES, 10) == [13, 12, 11, 14, 10, 15]  # the data decides
    # seen classes only: with phase 1 unseen, its images are never chosen
    assert gallery.choose_images(_annotations(), CATEGORIES[CATEGORIES["phase"] == 0], 10) == [14, 10, 13]


def _detection(mask: np.ndarray, category_id: int, score: float, image_id: int = 3) -> dict:
    ys, xs = np.nonzero(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    box = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    return dict(image_id=image_id, category_id=category_id, score=score, x=box[0], y=box[1], w=box[2], h=box[3],
                rle_counts=rle["counts"])  # fmt: skip


def test_a_drawn_mask_lands_where_its_rle_says():
    grey = torch.full((3, 10, 10), 100, dtype=torch.uint8)
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True  # rows 2..4, columns 3..6
    rows = pd.DataFrame([_detection(mask, 1, 0.9)])
    panel = gallery.detections_panel(rows, grey, {1: "cat"})
    scale = gallery.PANEL / 10
    assert panel.shape == (3, gallery.PANEL, gallery.PANEL)

    def at(row: int, column: int) -> np.ndarray:  # the panel pixel at the centre of an image pixel
        return panel[:, int((row + 0.5) * scale), int((column + 0.5) * scale)].numpy().astype(int)

    blended = (np.array(gallery.colour(1)) + 100) / 2  # alpha 0.5 over the grey
    for row, column in [(4, 3), (4, 6), (3, 5)]:  # inside the mask, clear of the label at the top left
        assert np.abs(at(row, column) - blended).max() <= 1, (row, column)
    for row, column in [(4, 2), (6, 5), (8, 8), (0, 0)]:  # outside the mask and its box
        assert at(row, column).tolist() == [100, 100, 100], (row, column)


def test_the_gallery_grid_has_a_row_per_image_and_a_column_per_model(dataset, split_dir, tmp_path, monkeypatch):
    data = phase_data(dataset["data_dir"], split_dir, 1, "val", dataset["image_root"], with_masks=False)
    mask = np.zeros((10, 20), bool)
    mask[1:5, 1:5] = True  # the val image's object, found with 0.9 by one model and 0.2 by the other
    found, faint = pd.DataFrame([_detection(mask, 1, 0.9)]), pd.DataFrame([_detection(mask, 1, 0.2)])
    tables.write_table(faint, tmp_path / "faint.parquet", tables.DETECTIONS)
    drawn = {}
    save_grid = gallery.save_grid
    monkeypatch.setattr(gallery, "save_grid", lambda rows, *args: drawn.update(rows=rows) or save_grid(rows, *args))
    settings = {"images": 4, "score_thresh": 0.5}
    columns = {"found": found, "faint": tmp_path / "faint.parquet"}  # a table, or a file read for the images
    assert gallery.draw_gallery(data, load_phase_plan(split_dir), columns, settings, tmp_path / "g.png") == [3]
    with Image.open(tmp_path / "g.png") as png:
        assert png.size == (round(3 * gallery.CELL * gallery.DPI), round((gallery.CELL + gallery.TITLE) * gallery.DPI))
    ((truth, strong, weak),) = drawn["rows"]
    image = torch.from_numpy(np.array(Image.open(dataset["image_root"] / "val2017/c.png").convert("RGB")))
    plain = gallery.draw_panel(
        image.permute(2, 0, 1), torch.zeros((0, 10, 20), dtype=torch.bool), torch.zeros(0, 4), [], []
    )
    assert torch.equal(weak, plain)  # below the score threshold: nothing drawn
    assert not torch.equal(truth, plain) and not torch.equal(strong, plain)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"images": 0, "score_thresh": 0.5}, "report.gallery.images: 0 is not a number of images >= 1"),
        ({"images": 2, "score_thresh": 1.5}, "report.gallery.score_thresh: 1.5 is not a score in [0, 1]"),
    ],
)
def test_bad_gallery_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        gallery.gallery_settings(settings)
