import hashlib
import json
import logging
import re
from collections import defaultdict

import pytest

from lst.data.lvis_json import merge_splits, read_lvis_json
from lst.data.synthetic_lvis import SyntheticLvisSpec, generate, main

SMALL = SyntheticLvisSpec(
    train_images=600, val_images=150, frequent=12, common=15, rare=10, mean_vertices=12.0, quirk_rate=0.01
)
URL = re.compile(r"http://images\.cocodataset\.org/(train2017|val2017)/(\d{12})\.jpg")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate(out, SMALL)
    files = {split: json.loads((out / f"lvis_v1_{split}.json").read_text()) for split in ("train", "val")}
    return out, summary, files


def test_lvis_v1_layout(small):
    _, summary, files = small
    train = files["train"]
    assert set(train) == {"info", "annotations", "images", "licenses", "categories"}
    image = train["images"][0]
    assert "file_name" not in image
    assert {"id", "width", "height", "coco_url", "neg_category_ids", "not_exhaustive_category_ids"} <= set(image)
    for image in train["images"]:
        match = URL.fullmatch(image["coco_url"])
        assert match and match[1] == "train2017" and int(match[2]) == image["id"]
    category = train["categories"][0]
    assert set(category) == {"id", "name", "synset", "synonyms", "def", "frequency", "image_count", "instance_count"}
    annotation = train["annotations"][0]
    assert set(annotation) == {"id", "image_id", "category_id", "bbox", "area", "segmentation"}
    for annotation in train["annotations"][:500]:
        assert all(len(polygon) >= 12 and len(polygon) % 2 == 0 for polygon in annotation["segmentation"])
    # LVIS v1's val draws its images from both COCO 2017 folders
    folders = {URL.fullmatch(image["coco_url"])[1] for image in files["val"]["images"]}
    assert folders == {"train2017", "val2017"}
    out = small[0]
    assert summary["bytes"] == {split: (out / f"lvis_v1_{split}.json").stat().st_size for split in ("train", "val")}


def test_counts_and_the_lvis_frequency_rule(small):
    _, summary, files = small
    train, val = files["train"], files["val"]
    assert len(train["images"]) == 600 and len(val["images"]) == 150
    assert len(train["categories"]) == SMALL.num_categories
    assert 0.8 * 12.7 * 600 < len(train["annotations"]) < 1.2 * 12.7 * 600
    assert summary["annotations"]["train"] == len(train["annotations"])
    images_of, instances = defaultdict(set), defaultdict(int)
    for annotation in train["annotations"]:
        images_of[annotation["category_id"]].add(annotation["image_id"])
        instances[annotation["category_id"]] += 1
    for category in train["categories"]:
        image_count = len(images_of[category["id"]])
        assert category["image_count"] == image_count >= 1
        assert category["instance_count"] == instances[category["id"]]
        assert category["frequency"] == ("r" if image_count <= 10 else "c" if image_count <= 100 else "f")
    groups = [category["frequency"] for category in train["categories"]]
    assert (groups.count("f"), groups.count("c"), groups.count("r")) == (12, 15, 10)
    assert summary["frequency"] == {"f": 12, "c": 15, "r": 10}
    # every image holds an annotation; val shares the categories but no image or annotation id
    assert {a["image_id"] for a in train["annotations"]} == {image["id"] for image in train["images"]}
    assert val["categories"] == train["categories"]
    assert not {i["id"] for i in train["images"]} & {i["id"] for i in val["images"]}
    assert not {a["id"] for a in train["annotations"]} & {a["id"] for a in val["annotations"]}


def test_negative_and_not_exhaustive_labels_agree_with_the_annotations(small):
    _, _, files = small
    for split in ("train", "val"):
        present = defaultdict(set)
        for annotation in files[split]["annotations"]:
            present[annotation["image_id"]].add(annotation["category_id"])
        for image in files[split]["images"]:
            assert not set(image["neg_category_ids"]) & present[image["id"]]
            assert set(image["not_exhaustive_category_ids"]) <= present[image["id"]]
        assert any(image["neg_category_ids"] for image in files[split]["images"])


def test_boxes_hold_their_polygons_except_the_planted_quirks(small):
    _, _, files = small
    sizes = {image["id"]: (image["width"], image["height"]) for image in files["train"]["images"]}
    overshoot = degenerate = 0
    for annotation in files["train"]["annotations"]:
        x, y, w, h = annotation["bbox"]
        width, height = sizes[annotation["image_id"]]
        xs = [v for polygon in annotation["segmentation"] for v in polygon[0::2]]
        ys = [v for polygon in annotation["segmentation"] for v in polygon[1::2]]
        assert x == pytest.approx(min(xs)) and y == pytest.approx(min(ys))
        if h == 0:
            degenerate += 1
        elif x + w > width:
            overshoot += 1
            assert x + w - width < 0.01  # a float rounding, not a wrong box
        else:
            assert x + w == pytest.approx(max(xs)) and y + h == pytest.approx(max(ys))
            assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
    assert overshoot > 0 and degenerate > 0


def test_ingests_with_clipping_and_skipping_counted(small, caplog):
    out, summary, _ = small
    with caplog.at_level(logging.INFO, logger="lst.data.lvis_json"):
        train = read_lvis_json(out / "lvis_v1_train.json", "train")
        val = read_lvis_json(out / "lvis_v1_val.json", "val")
    data = merge_splits(train, val, out / "lvis_v1_train.json", out / "lvis_v1_val.json")
    skipped = [int(m[1]) for m in re.finditer(r"skipped (\d+) degenerate", caplog.text)]
    assert len(skipped) == 2 and all(skipped)
    total = summary["annotations"]["train"] + summary["annotations"]["val"]
    assert data.annotations.num_rows == total - sum(skipped)
    assert "clipped" in caplog.text
    names = data.images["file_name"].to_pylist()
    assert all(re.fullmatch(r"(train|val)2017/\d{12}\.jpg", name) for name in names)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    spec = SyntheticLvisSpec(train_images=200, val_images=40, frequent=4, common=5, rare=3, mean_vertices=8.0)

    def digest(folder, seed):
        generate(folder, SyntheticLvisSpec(**{**spec.__dict__, "seed": seed}))
        return [hashlib.sha256((folder / f"lvis_v1_{s}.json").read_bytes()).hexdigest() for s in ("train", "val")]

    first = digest(tmp_path / "a", 3)
    assert digest(tmp_path / "b", 3) == first
    other = digest(tmp_path / "c", 4)
    assert other[0] != first[0] and other[1] != first[1]


def test_too_few_images_for_frequent_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="more than 100 training images"):
        generate(tmp_path, SyntheticLvisSpec(train_images=100, val_images=10))


def test_command_line(tmp_path, capsys):
    main(["--out", str(tmp_path), "--images", "150", "--val-images", "30", "--categories", "2", "3", "4",
          "--mean-vertices", "8"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == {"train": 150, "val": 30}
    assert summary["frequency"] == {"f": 2, "c": 3, "r": 4}
    assert (tmp_path / "lvis_v1_train.json").stat().st_size == summary["bytes"]["train"]
