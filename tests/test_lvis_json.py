import json

import pytest

from lst.data.lvis_json import merge_splits, read_lvis_json
from lst.data.tables import ANNOTATIONS, CATEGORIES, IMAGES
from lst.errors import DataError


def test_reads_images_annotations_categories(tmp_path, make_lvis_file):
    tables = read_lvis_json(make_lvis_file(tmp_path / "train.json"), "train")
    assert tables.images["image_id"].to_pylist() == [1, 2]
    # v0.5 / demo use file_name, v1 only coco_url: resolved to <split>2017/<name>
    assert tables.images["file_name"].to_pylist() == ["a.png", "train2017/b.jpg"]
    assert tables.images["neg_category_ids"].to_pylist() == [[3], []]
    assert tables.images["split"].to_pylist() == ["train", "train"]
    assert tables.annotations["annotation_id"].to_pylist() == [10, 11]
    assert json.loads(tables.annotations["segmentation"][0].as_py()) == [[1, 1, 5, 1, 5, 5, 1, 5]]
    assert tables.annotations["area"].to_pylist() == [16.0, 9.0]
    assert tables.categories["category_id"].to_pylist() == [1, 2, 3]
    assert tables.images.schema.equals(IMAGES) and tables.annotations.schema.equals(ANNOTATIONS)
    assert tables.categories.schema.equals(CATEGORIES)


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
    assert tables.annotations["annotation_id"].to_pylist() == [1]
    assert [json.loads(t) for t in tables.annotations["segmentation"].to_pylist()] == [[[15, 2, 20, 2, 20, 5]]]
    assert tables.annotations["x"][0].as_py() + tables.annotations["w"][0].as_py() == pytest.approx(20.0)


def test_image_paths_where_coco_2017_keeps_them(tmp_path, make_lvis_file):
    images = [
        # LVIS v0.5: COCO 2014 names; train images are all in train2017, val images in val2017
        {"id": 397133, "width": 20, "height": 10, "file_name": "COCO_val2014_000000397133.jpg"},
        {"id": 9, "width": 20, "height": 10, "file_name": "COCO_train2014_000000000009.jpg"},
        # LVIS v1: coco_url only, val holds images of both COCO 2017 folders
        {"id": 5, "width": 20, "height": 10, "coco_url": "http://images.cocodataset.org/val2017/000000000005.jpg"},
        {"id": 6, "width": 20, "height": 10, "coco_url": "http://images.cocodataset.org/train2017/000000000006.jpg"},
        {"id": 7, "width": 20, "height": 10, "file_name": "train/000007.png"},  # the demo's own layout
    ]
    path = make_lvis_file(tmp_path / "images.json", images=images, annotations=[])
    expected = {
        "train": ["train2017/000000397133.jpg", "train2017/000000000009.jpg"],
        "val": ["val2017/000000397133.jpg", "val2017/000000000009.jpg"],
    }
    for split in ("train", "val"):
        names = read_lvis_json(path, split).images["file_name"].to_pylist()
        assert names == expected[split] + [
            "val2017/000000000005.jpg",
            "train2017/000000000006.jpg",
            "train/000007.png",
        ]


def test_long_segmentation_columns_are_chunked(tmp_path, make_lvis_file, monkeypatch):
    """Arrow strings address 2 GiB at most: the column is split into chunks, with nothing lost."""
    import lst.data.lvis_json

    path = make_lvis_file(tmp_path / "train.json")
    whole = read_lvis_json(path, "train").annotations
    monkeypatch.setattr(lst.data.lvis_json, "_MAX_CHUNK_BYTES", 10)
    chunked = read_lvis_json(path, "train").annotations
    assert chunked["segmentation"].num_chunks == 2
    assert chunked.equals(whole)


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
        (lambda d: d["annotations"][0].update(segmentation=[[], []]), "empty segmentation"),
        (lambda d: d["annotations"][0].update(segmentation=None), "empty segmentation"),
        (lambda d: d["annotations"][0].update(bbox=[1, 1, float("inf"), 4]), "not valid json"),
        (lambda d: d["images"][1].pop("coco_url"), "image 2 has neither file_name nor coco_url"),
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


def test_val_may_reuse_train_ids_but_not_add_categories(tmp_path, make_lvis_file):
    """Files exported on their own number from 1 each: images stay apart by split; new categories are refused."""
    train_path = make_lvis_file(tmp_path / "train.json")
    train = read_lvis_json(train_path, "train")
    both = merge_splits(train, read_lvis_json(train_path, "val"), train_path, train_path)
    assert both.images["image_id"].to_pylist() == [1, 2, 1, 2]
    assert both.images["split"].to_pylist() == ["train", "train", "val", "val"]
    assert both.annotations["annotation_id"].to_pylist() == [10, 11, 10, 11]
    val_path = make_lvis_file(tmp_path / "val.json", categories=[{"id": 7, "name": "x"}], images=[], annotations=[])
    with pytest.raises(DataError, match=r"category ids \[7\]"):
        merge_splits(train, read_lvis_json(val_path, "val"), train_path, val_path)
