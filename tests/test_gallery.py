"""The prediction gallery: which images, where a drawn mask lands, the grid, the settings."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from lst.data import tables
from lst.data.dataset import DetectionData
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
    elsewhere = np.zeros((10, 20), bool)
    elsewhere[6:9, 12:19] = True  # a wrong detection, scored below the right one
    found = pd.DataFrame([_detection(mask, 1, 0.9), _detection(elsewhere, 1, 0.5)])
    faint = pd.DataFrame([_detection(elsewhere, 1, 0.1), _detection(mask, 1, 0.2)])
    tables.write_table(faint, tmp_path / "faint.parquet", tables.DETECTIONS)
    drawn = {}
    save_grid = gallery.save_grid
    monkeypatch.setattr(
        gallery, "save_grid", lambda rows, *args: drawn.update(rows=rows, columns=args[0]) or save_grid(rows, *args)
    )
    settings = {"images": 4, "f1_images": 500}
    columns = {"found": found, "faint": tmp_path / "faint.parquet"}  # a table, or a file read for the images
    thresholds = gallery.draw_gallery(data, load_phase_plan(split_dir), columns, settings, tmp_path / "g.png")
    assert thresholds == pytest.approx({"found": 0.9, "faint": 0.2})  # each model's own: the right one only
    assert drawn["columns"] == ["ground truth", "found\nscore >= 0.90", "faint\nscore >= 0.20"]
    with Image.open(tmp_path / "g.png") as png:
        assert png.size == (round(3 * gallery.CELL * gallery.DPI), round((gallery.CELL + gallery.TITLE) * gallery.DPI))
    ((truth, strong, weak),) = drawn["rows"]
    image = torch.from_numpy(np.array(Image.open(dataset["image_root"] / "val2017/c.png").convert("RGB"))).permute(
        2, 0, 1
    )
    one = gallery.detections_panel(found.iloc[:1], image, {1: _names(split_dir)[1]})
    assert torch.equal(strong, one)  # the wrong detection is not drawn
    plain = gallery.draw_panel(image, torch.zeros((0, 10, 20), dtype=torch.bool), torch.zeros(0, 4), [], [])
    assert not torch.equal(truth, plain) and not torch.equal(weak, plain)


def _names(split_dir) -> dict[int, str]:
    plan = load_phase_plan(split_dir)
    return dict(zip(plan["category_id"].tolist(), plan["name"], strict=True))


def _image_data(objects: list[tuple[int, int, list[float]]], negatives: dict[int, list[int]]) -> DetectionData:
    """Images with (image_id, category_id, xywh box) objects of classes 1 and 2."""
    annotations = pd.DataFrame(
        [dict(annotation_id=n, image_id=i, category_id=c, x=b[0], y=b[1], w=b[2], h=b[3], iscrowd=False)
         for n, (i, c, b) in enumerate(objects)]
    )  # fmt: skip
    ids = sorted({i for i, _, _ in objects} | set(negatives))
    images = pd.DataFrame({"image_id": ids, "neg_category_ids": [np.array(negatives.get(i, [])) for i in ids]})
    return DetectionData(images, annotations, pd.DataFrame({"category_id": [1, 2]}), ".", with_masks=False)


def _boxes(rows: list[tuple[int, int, float, list[float]]]) -> pd.DataFrame:
    """(image_id, category_id, score, xywh box) detections."""
    return pd.DataFrame(
        [dict(image_id=i, category_id=c, score=s, x=b[0], y=b[1], w=b[2], h=b[3]) for i, c, s, b in rows]
    )


def test_the_threshold_is_the_best_f1_as_counted_by_hand():
    # image 1: two objects of class 1; image 2: one of class 2 and class 1 verified absent
    data = _image_data([(1, 1, [0, 0, 10, 10]), (1, 1, [20, 0, 10, 10]), (2, 2, [0, 0, 10, 10])], {2: [1]})
    detections = _boxes([
        (1, 1, 0.9, [0, 0, 10, 10]),   # right
        (1, 1, 0.8, [1, 0, 10, 10]),   # the same object again (IoU 0.82): wrong, matched already
        (2, 1, 0.7, [0, 0, 10, 10]),   # class 1 on image 2, verified absent: wrong
        (2, 2, 0.6, [0, 0, 10, 12]),   # right (IoU 10/12)
        (1, 2, 0.5, [20, 0, 10, 10]),  # class 2 not verified on image 1: not counted
        (1, 1, 0.4, [20, 0, 10, 30]),  # IoU 1/3 with the second object: wrong
        (1, 1, 0.3, [21, 0, 10, 10]),  # right: the second object (IoU 0.82)
    ])  # fmt: skip
    # counted cut-offs (3 objects): F1 = 2 TP / (detections + objects)
    # 0.9: 2/4, 0.8: 2/5, 0.7: 2/6, 0.6: 4/7, 0.4: 4/8, 0.3: 6/9 (the best)
    assert gallery.f1_threshold(data, detections, [1, 2]) == pytest.approx(0.3)
    assert gallery.f1_threshold(data, detections.iloc[:4], [1, 2]) == pytest.approx(0.6)  # 2/4, 2/5, 2/6, 4/7
    assert gallery.f1_threshold(data, detections.iloc[[2]], [1, 2]) == float("inf")  # none right
    assert gallery.f1_threshold(data, detections, [2]) == pytest.approx(0.6)  # image 2 only: 0/2, 2/3


def test_a_monotone_rescaling_of_the_scores_draws_the_same_boxes():
    generator = np.random.default_rng(0)
    objects = [(int(i), int(c), [float(x), float(y), 10.0, 10.0])
               for i, c, x, y in zip(np.repeat(np.arange(1, 6), 3), generator.integers(1, 3, 15),
                                     np.tile([0, 20, 40], 5), generator.integers(0, 5, 15), strict=True)]  # fmt: skip
    data = _image_data(objects, {})
    rows = []
    for image_id, category_id, (x, y, w, h) in objects:  # a near box, a shifted one, a wrong class
        rows += [(image_id, category_id, generator.random(), [x + generator.random(), y, w, h]),
                 (image_id, category_id, generator.random(), [x + 6, y, w, h]),
                 (image_id, 3 - category_id, generator.random(), [x, y, w, h])]  # fmt: skip
    plain = _boxes(rows)
    rescaled = plain.assign(score=0.05 + 0.5 * plain["score"] ** 3)  # lower and squashed, the same order
    ids = list(range(1, 6))
    kept = [table[table["score"] >= gallery.f1_threshold(data, table, ids)] for table in (plain, rescaled)]
    assert 0 < len(kept[0]) < len(plain)
    assert kept[0].index.tolist() == kept[1].index.tolist()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"images": 0, "f1_images": 500}, "report.gallery.images: 0 is not a number of images >= 1"),
        ({"images": 2, "f1_images": 1.5}, "report.gallery.f1_images: 1.5 is not a number of images >= 1"),
    ],
)
def test_bad_gallery_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        gallery.gallery_settings(settings)
