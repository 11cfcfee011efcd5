"""Mask targets rasterised per positive RoI (lst.data.masks, lst.modeling.roi_heads) against full-image masks.

References: pycocotools' full-image rasterisation, sampled at the RoI's cell centres or pooled by
RoIAlign; and torchvision's own mask loss on full-image masks, for the same sampled RoIs.
"""

import numpy as np
import pytest
import torch
from conftest import SMALL
from pycocotools import mask as mask_utils
from torchvision.ops import roi_align

from lst.data.dataset import hflip
from lst.data.masks import INSTANCE_MASKS, InstanceMasks, rasterize_in_box
from lst.engine.trainer import keyed_sampling
from lst.modeling.mask_rcnn import build_model

M = 28


def _star(cx: float, cy: float, radius: float, rotation: float, points: int = 7) -> list[float]:
    """A star polygon, vertices rounded to 2 decimals as LVIS's."""
    angles = rotation + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2, 0.45 * radius, radius)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).ravel().round(2).tolist()


def _full(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Cells with a 4-neighbour of the other value."""
    padded = np.pad(mask, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    return np.any([n != centre for n in neighbours], axis=0)


def test_integer_polygon_crop_is_the_full_mask_exactly():
    # an L shape on integer pixels; a 14 px box at M = 28: each image pixel is 2 x 2 cells
    polygon = [10.0, 8, 24, 8, 24, 14, 16, 14, 16, 22, 10, 22]
    full = _full([polygon], 40, 48)
    box = torch.tensor([[12.0, 6, 26, 20]])
    crop = InstanceMasks.from_segmentations([[polygon]], 40, 48).crop_and_resize(box, torch.tensor([0]), (40, 48), M)
    expected = torch.from_numpy(full[6:20, 12:26]).repeat_interleave(2, 0).repeat_interleave(2, 1).float()
    assert torch.equal(crop[0], expected) and expected.sum() > 100
    # and RoIAlign of the full mask (pixel centres at c + 0.5), thresholded, agrees
    pooled = roi_align(torch.from_numpy(full)[None, None].float(), [box], M, 1.0, 0, aligned=True)[0, 0]
    assert torch.equal((pooled >= 0.5).float(), expected)


def test_polygon_and_rle_crops_sample_the_full_mask():
    height, width = 120, 160
    polygon = _star(70.3, 55.7, 48, 0.3)  # cut by the box below, which runs past it on two sides
    full = _full([polygon], height, width)
    x0, y0 = 40, 20  # 3 x 3 image pixels per cell
    box = torch.tensor([[x0, y0, x0 + 3 * M, y0 + 3 * M]], dtype=torch.float32)
    rle = mask_utils.encode(np.asfortranarray(full))
    rle["counts"] = rle["counts"].decode()
    masks = InstanceMasks.from_segmentations([[polygon], rle], height, width)
    crops = masks.crop_and_resize(box.repeat(2, 1), torch.tensor([0, 1]), (height, width), M).numpy()
    block = full[y0 : y0 + 3 * M, x0 : x0 + 3 * M]

    # polygon: a cell is in when its centre (the centre pixel of its 3 x 3 block) is in the polygon;
    # pycocotools snaps vertices to 1/5 of a pixel of each raster (here 0.6 image pixels in the box),
    # so a few boundary cells may differ
    centres = block[1::3, 1::3]
    differ = crops[0] != centres
    assert differ.sum() <= 0.02 * M * M and not (differ & ~_boundary(centres)).any()
    assert centres.sum() > 200 and 0 < crops[0][:, 0].sum() < M  # the box cuts the star
    # RLE: RoIAlign averages the 3 x 3 block of the decoded mask; thresholded at 0.5 (a majority)
    majority = block.reshape(M, 3, M, 3).mean(axis=(1, 3)) >= 0.5
    assert np.array_equal(crops[1], majority.astype(np.float32))
    assert np.array_equal(rasterize_in_box([np.array(polygon)], box[0].double().numpy(), M), crops[0])


def test_flip_and_the_models_resize_move_the_masks_with_the_image():
    height, width = 60, 80
    polygon = _star(30.5, 25.2, 18, 1.1)
    rle = mask_utils.encode(np.asfortranarray(_full([_star(60.2, 40.7, 12, 0.2)], height, width)))
    masks = InstanceMasks.from_segmentations([[polygon], rle], height, width)
    flipped = masks.flip()
    full = masks.full_masks()
    # flipping the polygons is flipping the mask (up to pycocotools' vertex snapping on a few pixels)
    assert torch.equal(flipped.full_masks()[1], full[1].flip(-1))
    assert (flipped.full_masks()[0] != full[0].flip(-1)).sum() <= 10
    # RoIs in the model's resized frame (60 x 80 -> 96 x 128): the target of a box around the flipped
    # object is RoIAlign of the flipped full mask over the same box in the image's own frame
    ratio = 96 / 60
    boxes = torch.tensor([[26.4, 1.5, 71.0, 46.0], [2.0, 25.0, 42.0, 62.5]]) * ratio
    crops = flipped.crop_and_resize(boxes, torch.tensor([0, 1]), (96, 128), M)
    reference = roi_align(full.flip(-1)[:, None].float(), [*(b[None] / ratio for b in boxes)], M, 1.0, 0, True)
    reference = reference[torch.arange(2), 0]
    assert (crops[0] != (reference[0] >= 0.5).float()).float().mean() < 0.02
    assert torch.equal(crops[1], (reference[1] >= 0.5).float())


def test_flip_does_not_change_the_original():
    polygon = [1.0, 1, 6, 1, 6, 5]
    masks = InstanceMasks.from_segmentations([[polygon]], 8, 10)
    masks.flip()
    assert masks.polygons[0][0].tolist() == polygon


def test_an_rle_of_another_size_is_refused():
    rle = mask_utils.encode(np.zeros((5, 6), np.uint8, order="F"))
    with pytest.raises(ValueError, match=r"an RLE of size \[5, 6\] on a 8x10 image"):
        InstanceMasks.from_segmentations([rle], 8, 10)


def _scene(rng: np.random.Generator, objects: int, height: int = 60, width: int = 80):
    """An image with ``objects`` random stars (the last one stored as an RLE) and its target parts."""
    image = torch.full((3, height, width), 0.5)
    segmentations, boxes = [], []
    for index in range(objects):
        radius = rng.uniform(8, 16)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        polygon = _star(cx, cy, radius, rng.uniform(0, np.pi), int(rng.integers(5, 9)))
        full = _full([polygon], height, width)
        image[:, torch.from_numpy(full).bool()] = torch.tensor(rng.uniform(0, 1, 3), dtype=torch.float32)[:, None]
        segmentations.append(mask_utils.encode(np.asfortranarray(full)) if index == objects - 1 else [polygon])
        xs, ys = polygon[0::2], polygon[1::2]
        boxes.append([min(xs), min(ys), max(xs), max(ys)])
    labels = torch.from_numpy(rng.integers(1, 4, objects))
    return image, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), labels, segmentations


def _batch(new: bool, swap_flip: bool = False):
    """Three images (one flipped, one without annotations) with either kind of mask target."""
    rng = np.random.default_rng(0)
    images, targets = [], []
    for objects, flip in ((5, False), (6, True), (0, False)):
        image, boxes, labels, segmentations = _scene(rng, objects)
        masks = InstanceMasks.from_segmentations(segmentations, *image.shape[1:])
        target = {"boxes": boxes, "labels": labels}
        target.update({INSTANCE_MASKS: masks} if new else {"masks": masks.full_masks()})
        if flip:
            image, target = hflip(image, target)  # the data loader's flip, of either kind of masks
        if swap_flip:
            target[INSTANCE_MASKS] = masks if flip else masks.flip()
        images.append(image)
        targets.append(target)
    return images, targets


def _losses(model, images, targets):
    with keyed_sampling(model) as set_keys:
        set_keys([11, 12, 13])
        torch.manual_seed(0)
        return model(images, targets)


def test_losses_match_torchvisions_on_full_image_masks():
    torch.manual_seed(0)
    # upscaled as LVIS images are (60 x 80 -> 96 x 128); 64 RoIs, up to 16 positive per image
    cfg = dict(SMALL, min_size=96, max_size=160, box_batch_size_per_image=64)
    model = build_model(cfg, num_classes=4).train()
    with torch.no_grad():  # large logits: the loss then counts target pixels on the wrong side
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(200.0)
    old = _losses(model, *_batch(new=False))
    new = _losses(model, *_batch(new=True))
    assert list(new) == list(old)
    for key in old:
        if key != "loss_mask":  # the same sampled RoIs: every other loss is identical
            assert torch.equal(new[key], old[key]), key
    assert old["loss_mask"] > 1.0  # far from log(2): the loss depends on the targets
    relative = abs(new["loss_mask"].item() / old["loss_mask"].item() - 1)
    assert relative < 0.03, (float(new["loss_mask"]), float(old["loss_mask"]))
    # masks that do not follow the flip give another loss: the comparison can fail
    wrong = _losses(model, *_batch(new=True, swap_flip=True))
    assert abs(wrong["loss_mask"].item() / old["loss_mask"].item() - 1) > 0.2
    new["loss_mask"].backward()
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0


def test_the_loader_gives_polygons_that_rasterise_to_the_annotated_masks(tmp_path):
    import json

    import pandas as pd
    from PIL import Image

    from lst.data.dataset import DetectionData, SampleStream, collate
    from lst.data.masks import segmentation_to_mask

    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    # two parts on integer pixels, where a flip is exact (other polygons: see the test above)
    polygon = [[2.0, 3, 20, 3, 20, 18, 2, 18], [25.0, 20, 35, 20, 35, 28, 25, 28]]
    rle = mask_utils.encode(np.asfortranarray(_full([[5.0, 10, 15, 10, 15, 25]], 30, 40)))
    rle["counts"] = rle["counts"].decode()
    segmentations = [json.dumps(polygon), json.dumps(rle)]
    annotations = pd.DataFrame(
        {"annotation_id": [1, 2], "image_id": [7, 7], "category_id": [3, 3], "x": [2.0, 5], "y": [3.0, 10],
         "w": [33.0, 10], "h": [25.0, 15], "segmentation": segmentations}
    )  # fmt: skip
    images = pd.DataFrame({"image_id": [7], "width": [40], "height": [30], "file_name": ["a.png"]})
    data = DetectionData(images, annotations, pd.DataFrame({"category_id": [3]}), tmp_path)
    expected = torch.from_numpy(np.stack([segmentation_to_mask(s, 30, 40) for s in segmentations]))
    assert torch.equal(data.load(7)[1][INSTANCE_MASKS].full_masks(), expected)
    assert torch.equal(data.load(7, flip=True)[1][INSTANCE_MASKS].full_masks(), expected.flip(-1))
    # through a data-loading worker process, as training reads them
    stream = SampleStream(data, pd.DataFrame({"image_id": [7], "flip": [True], "category_id": [3]}))
    loader = torch.utils.data.DataLoader(stream, batch_size=1, num_workers=1, collate_fn=collate)
    (_, (target,)), *_ = list(loader)
    assert torch.equal(target[INSTANCE_MASKS].full_masks(), expected.flip(-1))


def test_the_loss_is_torchvisions_on_the_same_targets():
    from torchvision.models.detection.roi_heads import maskrcnn_loss, project_masks_on_boxes

    from lst.modeling.roi_heads import mask_loss

    generator = torch.Generator().manual_seed(0)
    gt_masks = (torch.rand(3, 40, 50, generator=generator) > 0.5).to(torch.uint8)
    boxes = torch.tensor([[1.0, 2, 30, 35], [10, 5, 45, 20], [0, 0, 50, 40], [5, 5, 25, 15]])
    matched, gt_labels = torch.tensor([0, 2, 1, 2]), torch.tensor([3, 1, 2])
    logits = torch.randn(4, 4, M, M, generator=generator)
    expected = maskrcnn_loss(logits, [boxes], [gt_masks], [gt_labels], [matched])
    targets = project_masks_on_boxes(gt_masks, boxes, matched, M)
    assert torch.equal(mask_loss(logits, gt_labels[matched], targets), expected)
    assert mask_loss(logits[:0], gt_labels[:0], targets[:0]) == 0
