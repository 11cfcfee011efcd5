import json

import pytest

from lst.lvis_json import DataError, merge_splits, read_lvis_json


def test_reads_images_annotations_categories(tmp_path, make_lvis_file):
    tables = read_lvis_json(make_lvis_file(tmp_path / "train.json"), "train")
    assert tables.images["image_id"].tolist() == [1, 2]
    # v0.5 / demo use file_name, v1 only coco_url: resolved to <split>2017/<name>
    assert tables.images["file_name"].tolist() == ["a.png", "train2017/b.jpg"]
    assert list(tables.images["neg_category_ids"].iloc[0]) == [3]
    assert tables.annotations["annotation_id"].tolist() == [10, 11]
    assert json.loads(tables.annotations["segmentation"].iloc[0]) == [[1, 1, 5, 1, 5, 5, 1, 5]]
    assert tables.categories["category_id"].tolist() == [1, 2, 3]


def test_clips_overshooting_boxes_and_skips_degenerate_ones(tmp_path, make_lvis_file):
    annotations = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [15, 2, 5.0001, 3],
            "segmentation": [[15, 2, 20, 2, 20, 5]],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 1,
            "bbox": [3, 3, 0.0, 2],
            "segmentation": [[3, 3, 3, 5, 3, 4]],
        },
    ]
    tables = read_lvis_json(make_lvis_file(tmp_path / "t.json", annotations=annotations), "train")
    assert tables.annotations["annotation_id"].tolist() == [1]
    assert tables.annotations["x"].iloc[0] + tables.annotations["w"].iloc[0] == pytest.approx(20.0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("annotations"), "annotations"),
        (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image ids [1]"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation ids [10]"),
        (lambda d: d["categories"].append(dict(d["categories"][0])), "duplicate category ids [1]"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotations [10] refer to unknown image ids"),
        (
            lambda d: d["annotations"][0].update(category_id=99),
            "annotations [10] refer to unknown category ids",
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 1, -4, 4]), "negative box width or height"),
        (lambda d: d["annotations"][0].update(segmentation=[]), "empty segmentation"),
        (lambda d: d["images"][0].update(width=0), "non-positive size"),
        (lambda d: d["images"][0].update(neg_category_ids=[42]), "unknown category ids in neg_category_ids"),
        (lambda d: d["annotations"][0].pop("bbox"), "bbox"),
        (lambda d: d.update(categories=[]), "has no categories"),
    ],
)
def test_refuses_corrupt_files_naming_file_and_problem(tmp_path, make_lvis_file, change, message):
    path = make_lvis_file(tmp_path / "bad.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as error:
        read_lvis_json(path, "train")
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_refuses_truncated_json(tmp_path, make_lvis_file):
    path = make_lvis_file(tmp_path / "cut.json")
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DataError, match="not valid json"):
        read_lvis_json(path, "train")


def test_val_must_not_share_ids_or_add_categories(tmp_path, make_lvis_file):
    train_path = make_lvis_file(tmp_path / "train.json")
    train = read_lvis_json(train_path, "train")
    with pytest.raises(DataError, match="also in"):
        merge_splits(train, read_lvis_json(train_path, "val"), train_path, train_path)
    val_path = make_lvis_file(tmp_path / "val.json", categories=[{"id": 7, "name": "x"}], images=[], annotations=[])
    with pytest.raises(DataError, match=r"category ids \[7\]"):
        merge_splits(train, read_lvis_json(val_path, "val"), train_path, val_path)
