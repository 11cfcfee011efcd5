import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


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
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def make_lvis_file():
    return lvis_file
