"""Tests of the seeded synthetic LVIS-format demo dataset (lst.data.demo)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from lvis import LVIS
from PIL import Image

import lst.data.demo as demo
from lst.data.demo import COLOURS, SHAPES, DemoSpec, generate_demo

SMALL = DemoSpec(num_train_images=40, num_val_images=20, head_instances=40, tail_instances=2, val_min_instances=3)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    paths = generate_demo(tmp_path_factory.mktemp("demo") / "data")
    with open(paths["train_json"]) as f:
        train = json.load(f)
    with open(paths["val_json"]) as f:
        val = json.load(f)
    return {"paths": paths, "train": train, "val": val, "spec": DemoSpec()}


def _present(data: dict) -> dict[int, set[int]]:
    present: dict[int, set[int]] = defaultdict(set)
    for a in data["annotations"]:
        present[a["image_id"]].add(a["category_id"])
    return present


def _mask(ann: dict, h: int, w: int) -> np.ndarray:
    rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
    return mask_utils.decode(rle).astype(bool)


# ------------------------------------------------------------------------------------------- format


def test_paths_and_lvis_loadable(default_demo: dict) -> None:
    paths = default_demo["paths"]
    root = paths["train_json"].parent
    assert paths == {
        "train_json": root / "train.json",
        "val_json": root / "val.json",
        "image_root": root / "images",
    }
    for split in ("train", "val"):
        lv = LVIS(str(paths[f"{split}_json"]))
        data = default_demo[split]
        assert len(lv.get_img_ids()) == len(data["images"])
        assert len(lv.get_ann_ids()) == len(data["annotations"])
        # lvis' own mask decoding works on our polygons
        ann = lv.load_anns(lv.get_ann_ids()[:1])[0]
        assert lv.ann_to_mask(ann).sum() == ann["area"]


def test_fields_ids_and_files(default_demo: dict) -> None:
    spec: DemoSpec = default_demo["spec"]
    train, val = default_demo["train"], default_demo["val"]
    image_root = default_demo["paths"]["image_root"]
    assert len(train["images"]) == spec.num_train_images
    assert len(val["images"]) == spec.num_val_images
    for split, data in (("train", train), ("val", val)):
        for img in data["images"]:
            assert set(img) >= {"id", "width", "height", "file_name", "neg_category_ids"}
            assert "not_exhaustive_category_ids" in img
            assert re.fullmatch(rf"{split}/\d{{6}}\.png", img["file_name"])
            assert img["file_name"] == f"{split}/{img['id']:06d}.png"
            with Image.open(image_root / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (spec.image_size, spec.image_size)
                assert im.mode == "RGB"
        for a in data["annotations"]:
            assert set(a) >= {"id", "image_id", "category_id", "segmentation", "bbox", "area"}
            assert isinstance(a["segmentation"], list) and all(
                isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"]
            )
        for c in data["categories"]:
            assert set(c) >= {
                "id", "name", "synset", "synonyms", "def", "frequency", "image_count", "instance_count",
            }  # fmt: skip
    # ids unique across the two splits
    img_ids = [i["id"] for d in (train, val) for i in d["images"]]
    ann_ids = [a["id"] for d in (train, val) for a in d["annotations"]]
    assert len(set(img_ids)) == len(img_ids)
    assert len(set(ann_ids)) == len(ann_ids)
    assert max(i["id"] for i in train["images"]) < min(i["id"] for i in val["images"])
    # every annotation points to an image of its own split
    for d in (train, val):
        ids = {i["id"] for i in d["images"]}
        assert all(a["image_id"] in ids for a in d["annotations"])
    # categories (with train counts) identical in both files, as in LVIS
    assert train["categories"] == val["categories"]


def test_categories_are_shape_times_colour(default_demo: dict) -> None:
    cats = default_demo["train"]["categories"]
    assert len(cats) >= 24 and len(cats) == len(SHAPES) * len(COLOURS)
    assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
    names = {c["name"] for c in cats}
    assert names == {f"{col}_{shape}" for shape in SHAPES for col in COLOURS}
    assert "red_circle" in names
    # colours well separated from each other and from the grey background
    cols = np.array(list(COLOURS.values()), dtype=float)
    for i in range(len(cols)):
        assert np.abs(cols[i] - demo.BACKGROUND_GREY).max() > 60
        for j in range(i):
            assert np.linalg.norm(cols[i] - cols[j]) > 100


# ------------------------------------------------------------------------------------------ long tail


def test_long_tail_counts(default_demo: dict) -> None:
    spec: DemoSpec = default_demo["spec"]
    train, val = default_demo["train"], default_demo["val"]
    n = len(train["categories"])
    inst = Counter(a["category_id"] for a in train["annotations"])
    alpha = math.log(spec.head_instances / spec.tail_instances) / math.log(n)
    expected = [round(spec.head_instances * (r + 1) ** -alpha) for r in range(n)]
    assert expected[0] == spec.head_instances >= 200
    assert expected[-1] == spec.tail_instances <= 5
    assert sorted(inst.values(), reverse=True) == expected
    # the count of each class is the one of its seeded long-tail rank ...
    ranks = demo.long_tail_positions(spec.seed)
    assert sorted(ranks) == list(range(n))
    assert all(inst[k + 1] == expected[ranks[k]] for k in range(n))
    # ... and the long-tail order is not the id order
    assert ranks != list(range(n))
    by_id = [inst[k + 1] for k in range(n)]
    assert by_id != sorted(by_id, reverse=True)
    # category metadata carries the train counts
    img_count = Counter(cid for cid, _ in {(a["category_id"], a["image_id"]) for a in train["annotations"]})
    for c in train["categories"]:
        assert c["instance_count"] == inst[c["id"]]
        assert c["image_count"] == img_count[c["id"]]
    # val: every class measurable, and less skewed than train
    vinst = Counter(a["category_id"] for a in val["annotations"])
    assert set(vinst) == set(range(1, n + 1))
    assert min(vinst.values()) >= 8
    assert all(vinst[k + 1] == spec.val_counts()[ranks[k]] for k in range(n))
    assert max(vinst.values()) / min(vinst.values()) < max(inst.values()) / min(inst.values()) / 4


def test_frequency_rule(default_demo: dict) -> None:
    train = default_demo["train"]
    images_with = Counter(cid for cid, _ in {(a["category_id"], a["image_id"]) for a in train["annotations"]})

    def documented_rule(n_images: int) -> str:  # LVIS rule with the f threshold scaled 100 -> 50
        return "r" if n_images <= 10 else "c" if n_images <= 50 else "f"

    for c in train["categories"]:
        assert 1 <= images_with[c["id"]]
        assert c["frequency"] == documented_rule(images_with[c["id"]]), c
    groups = Counter(c["frequency"] for c in train["categories"])
    assert set(groups) == {"r", "c", "f"}
    assert min(groups.values()) >= 2


# -------------------------------------------------------------------------------------- masks / pixels


def test_masks_are_exact_and_bboxes_tight(default_demo: dict) -> None:
    spec: DemoSpec = default_demo["spec"]
    image_root = default_demo["paths"]["image_root"]
    colours = list(COLOURS.values())
    for split in ("train", "val"):
        data = default_demo[split]
        anns_by_img: dict[int, list[dict]] = defaultdict(list)
        for a in data["annotations"]:
            anns_by_img[a["image_id"]].append(a)
        for img in data["images"]:
            h, w = img["height"], img["width"]
            pixels = np.asarray(Image.open(image_root / img["file_name"]).convert("RGB"))
            anns = anns_by_img[img["id"]]
            assert 1 <= len(anns) <= spec.max_objects
            union = np.zeros((h, w), dtype=bool)
            for a in anns:
                m = _mask(a, h, w)
                colour = colours[(a["category_id"] - 1) % len(COLOURS)]
                assert m.any()
                assert (pixels[m] == colour).all(), "pixels inside the polygon must have the class colour"
                assert a["area"] == int(m.sum())
                xs, ys = a["segmentation"][0][0::2], a["segmentation"][0][1::2]
                x0, y0 = min(xs), min(ys)
                assert a["bbox"] == pytest.approx([x0, y0, max(xs) - x0, max(ys) - y0], abs=0.011)
                rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
                pix_corners = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
                bx, by, bw, bh = a["bbox"]
                # the mask lies inside the polygon's bbox; sharp tips (star, triangle) may cover no pixel
                # for up to ~2 px
                assert bx - 0.5 <= pix_corners[0] and pix_corners[2] <= bx + bw + 0.5
                assert by - 0.5 <= pix_corners[1] and pix_corners[3] <= by + bh + 0.5
                assert np.allclose(pix_corners, [bx, by, bx + bw, by + bh], atol=2.0)
                assert spec.min_size - 0.05 <= max(a["bbox"][2:]) <= spec.max_size + 0.05
                # objects do not touch: one background pixel at least between them
                grown = np.zeros((h + 2, w + 2), dtype=bool)
                for dy in range(3):
                    for dx in range(3):
                        grown[dy : dy + h, dx : dx + w] |= m
                assert not (grown[1:-1, 1:-1] & union).any()
                union |= m
            # outside the annotated masks: grey background, except the unannotated not-exhaustive object
            outside = pixels[~union].astype(int)
            is_grey = (outside[:, 0] == outside[:, 1]) & (outside[:, 1] == outside[:, 2])
            grey = outside[is_grey, 0]
            assert np.abs(grey - demo.BACKGROUND_GREY).max() <= spec.background_noise
            if img["not_exhaustive_category_ids"]:
                (cid,) = img["not_exhaustive_category_ids"]
                extra = outside[~is_grey]
                assert len(extra) >= 20
                assert (extra == colours[(cid - 1) % len(COLOURS)]).all()
            else:
                assert is_grey.all()


def test_not_exhaustive_object_is_drawn(default_demo: dict) -> None:
    image_root = default_demo["paths"]["image_root"]
    colours = list(COLOURS.values())
    for split in ("train", "val"):
        data = default_demo[split]
        anns_by_img: dict[int, list[dict]] = defaultdict(list)
        for a in data["annotations"]:
            anns_by_img[a["image_id"]].append(a)
        for img in data["images"]:
            if not img["not_exhaustive_category_ids"]:
                continue
            (cid,) = img["not_exhaustive_category_ids"]
            pixels = np.asarray(Image.open(image_root / img["file_name"]).convert("RGB"))
            union = np.zeros(pixels.shape[:2], dtype=bool)
            for a in anns_by_img[img["id"]]:
                union |= _mask(a, img["height"], img["width"])
            unannotated = (pixels == colours[(cid - 1) % len(COLOURS)]).all(-1) & ~union
            assert unannotated.sum() >= 20


def test_neg_and_not_exhaustive_invariants(default_demo: dict) -> None:
    spec: DemoSpec = default_demo["spec"]
    n_cls = len(default_demo["train"]["categories"])
    for split in ("train", "val"):
        data = default_demo[split]
        present = _present(data)
        n_ne = 0
        for img in data["images"]:
            here = present[img["id"]]
            neg, ne = img["neg_category_ids"], img["not_exhaustive_category_ids"]
            assert neg == sorted(set(neg)) and all(1 <= c <= n_cls for c in neg)
            assert not set(neg) & here, "negative categories must be absent"
            assert len(neg) == round(spec.neg_fraction * (n_cls - len(here)))
            assert set(ne) <= here, "not-exhaustive categories must be present (annotated)"
            n_ne += bool(ne)
        assert n_ne == round(spec.not_exhaustive_fraction * len(data["images"])) > 0
        # every category is verified negative somewhere, so rare-class AP is defined
        neg_cats = {c for img in data["images"] for c in img["neg_category_ids"]}
        assert neg_cats == set(range(1, n_cls + 1))


# ------------------------------------------------------------------------ determinism / atomicity / spec


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    a = _files(generate_demo(tmp_path / "a", SMALL)["train_json"].parent)
    b = _files(generate_demo(tmp_path / "b", SMALL)["train_json"].parent)
    assert len(a) == 2 + SMALL.num_train_images + SMALL.num_val_images
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    c = _files(generate_demo(tmp_path / "c", DemoSpec(**{**SMALL.__dict__, "seed": 1}))["train_json"].parent)
    assert c.keys() == a.keys()
    assert c["train.json"] != a["train.json"]
    assert c["val.json"] != a["val.json"]
    assert sum(c[k] != a[k] for k in a if k.endswith(".png")) > len(a) // 2


def test_json_is_canonical(tmp_path: Path) -> None:
    path = generate_demo(tmp_path / "d", SMALL)["train_json"]
    text = path.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"
    for key in ("images", "annotations", "categories"):
        ids = [x["id"] for x in data[key]]
        assert ids == sorted(ids)
    floats = [v for a in data["annotations"] for v in a["segmentation"][0] + a["bbox"]]
    assert all(round(v, 2) == v for v in floats)


def test_atomic_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "data"

    # a failing run leaves nothing behind
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(demo, "_categories", boom)
        with pytest.raises(RuntimeError, match="killed"):
            generate_demo(out, SMALL)
    assert list(tmp_path.iterdir()) == []
    # an existing (stale) dataset is replaced as a whole, and a failing rerun keeps the old one intact
    out.mkdir()
    (out / "stale.txt").write_text("old")
    generate_demo(out, SMALL)
    assert not (out / "stale.txt").exists()
    before = _files(out)
    with monkeypatch.context() as m:
        m.setattr(demo, "_categories", boom)
        with pytest.raises(RuntimeError):
            generate_demo(out, DemoSpec(**{**SMALL.__dict__, "seed": 3}))
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        DemoSpec(num_train_images=20)
    with pytest.raises(ValueError):
        DemoSpec(head_instances=3, tail_instances=4)
    with pytest.raises(ValueError):
        DemoSpec(min_size=50, max_size=40)
    spec = DemoSpec()
    assert spec.train_counts()[0] == 300 and spec.train_counts()[-1] == 4
    assert [spec.frequency(n) for n in (1, 10, 11, 50, 51)] == ["r", "r", "c", "c", "f"]
