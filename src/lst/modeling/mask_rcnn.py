"""Mask R-CNN on torchvision with LST's box head: a cosine classifier over fc7 without its final ReLU.

The architecture is fully described by a plain ``model`` config dict, stored in every checkpoint, so
later phases rebuild exactly the model the base phase trained.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from lst.conf.schema import Backbone
from lst.modeling.backbones import mobilenet_v2_fpn
from lst.modeling.roi_heads import TORCHVISION_BOX_LOSS_BETA, LstRoIHeads

BOX_PREDICTOR = "roi_heads.box_predictor."
MASK_LOGITS = "roi_heads.mask_predictor.mask_fcn_logits."


class BoxHead(TwoMLPHead):
    """fc6 -> ReLU -> fc7, with no ReLU after fc7 (the cosine classifier needs signed features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc7(F.relu(self.fc6(x.flatten(start_dim=1))))


class CosineBoxPredictor(nn.Module):
    """logits = s * cos(feature, class weight row); class-specific box regression as torchvision's.

    ``num_classes`` counts the background; a loss that needs more class logits (lst.losses.extra_logits) gets
    ``extra_logits`` more rows after the classes' (no box regression of their own). The classifier reads fc7
    as it is (signed); the regressor reads ReLU(fc7) when ``regression_relu``, as the released code's
    ``bbox_pred(F.relu(x))``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        scale: float = 10.0,
        learn_scale: bool = True,
        regression_relu: bool = True,
        extra_logits: int = 0,
    ):
        super().__init__()
        self.regression_relu = regression_relu
        # rows: background, the classes, then the loss's extra logits (Seesaw's objectness), as lst.losses lays out
        self.cls_score = nn.Linear(in_channels, num_classes + extra_logits, bias=False)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        scale_tensor = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale_tensor)
        else:
            self.register_buffer("scale", scale_tensor)

    @property
    def num_classes(self) -> int:
        """Background + classes: the outputs with a box regression (a loss's extra logits not counted)."""
        return self.bbox_pred.out_features // 4

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity to every class row (background first), without the scale."""
        with torch.autocast(features.device.type, enabled=False):  # float32 under AMP, as forward
            features = features.flatten(start_dim=1).float()
            return F.normalize(features, dim=1) @ F.normalize(self.cls_score.weight, dim=1).t()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # float32 under AMP: bf16 box deltas and cosines are too coarse (boxes would move by pixels)
        with torch.autocast(x.device.type, enabled=False):
            x = x.flatten(start_dim=1).float()
            return self.scale * self.cosine(x), self.bbox_pred(F.relu(x) if self.regression_relu else x)


class MaskWeightTransferPredictor(nn.Module):
    """Mask^X R-CNN's weight transfer: each class's 1x1 mask filter is predicted from its box classifier
    row, w_seg = LeakyReLU(Linear(LeakyReLU(Linear(w_det)))), so new classes get masks from their
    classifier rows alone; optionally plus a class-agnostic MLP on the 28x28 mask features, added to
    every class's logits. With ``detach_rows`` the classifier rows are detached, so the mask loss does
    not move the classifier; the released code does not detach them.
    """

    def __init__(
        self,
        in_channels: int,
        dim_reduced: int,
        box_predictor: CosineBoxPredictor,
        mlp: bool,
        detach_rows: bool = False,
        resolution: int = 28,
    ):
        super().__init__()
        self.detach_rows = detach_rows
        embedding = box_predictor.cls_score.weight.shape[1]
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        nn.init.kaiming_normal_(self.conv5_mask.weight, mode="fan_out", nonlinearity="relu")
        self.transfer = nn.Sequential(
            nn.Linear(embedding, embedding),
            nn.LeakyReLU(),
            nn.Linear(embedding, dim_reduced),
            nn.LeakyReLU(),
        )
        self.mlp = None
        if mlp:
            self.mlp = nn.Linear(dim_reduced * resolution * resolution, resolution * resolution)
            # the released init, not torch's default (docs/fidelity.md)
            nn.init.kaiming_normal_(self.mlp.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.mlp.bias)
        self._box_predictor = [box_predictor]  # a reference, not a second registration of its parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv5_mask(x))
        rows = self._box_predictor[0].cls_score.weight
        filters = self.transfer(rows.detach() if self.detach_rows else rows)
        logits = torch.einsum("nchw,kc->nkhw", x, filters)
        if self.mlp is not None:
            logits = logits + self.mlp(x.flatten(start_dim=1)).view(x.shape[0], 1, *x.shape[2:])
        return logits


def _conv_bn(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """A 4-stage conv net with BatchNorm (strides 4-32) for CPU demos trained from scratch."""

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 256)):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 16, 2), _conv_bn(16, widths[0], 1))
        channels = widths[0]
        for index, width in enumerate(widths, start=1):
            self.add_module(f"layer{index}", nn.Sequential(_conv_bn(channels, width, 2), _conv_bn(width, width, 1)))
            channels = width
        # the stem already halves; layer1 halves again -> stride 4
        self.layer1[0][0].stride = (2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - IntermediateLayerGetter runs children
        for module in self.children():
            x = module(x)
        return x


def _backbone(cfg: dict[str, Any]) -> BackboneWithFPN:
    name = Backbone(cfg["backbone"]).name  # a config's value is checked when it is composed
    if name == "small":
        widths = tuple(cfg.get("small_widths", (32, 64, 128, 256)))
        body = SmallBackbone(widths)
        return BackboneWithFPN(
            body,
            return_layers={f"layer{i}": str(i - 1) for i in range(1, 5)},
            in_channels_list=list(widths),
            out_channels=cfg["fpn_channels"],
            extra_blocks=LastLevelMaxPool(),
        )
    if name in ("resnet50_fpn", "resnet18_fpn"):
        # weights=None: nothing is downloaded; weights come from a trimmed COCO checkpoint or
        # model.backbone_weights (lst.modeling.backbones); FrozenBatchNorm2d (torchvision's default) either way
        backbone = resnet_fpn_backbone(backbone_name=name.removesuffix("_fpn"), weights=None, trainable_layers=5)
        if cfg.get("stride_in_1x1", False):
            _move_stride_to_1x1(backbone.body)
        return backbone
    return mobilenet_v2_fpn(cfg["fpn_channels"], pretrained=bool(cfg.get("backbone_weights")))


def _move_stride_to_1x1(body: nn.Module) -> None:
    """maskrcnn-benchmark (C2 weights) strides in each stage's first 1x1 conv, torchvision in the 3x3."""
    for layer in (body.layer2, body.layer3, body.layer4):
        block = layer[0]
        if isinstance(block, resnet.Bottleneck):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def build_model(cfg: dict[str, Any], num_classes: int) -> MaskRCNN:
    """Mask R-CNN for ``num_classes`` outputs (background included) from a ``model`` config dict."""
    backbone = _backbone(cfg)
    channels = backbone.out_channels
    levels = ["0", "1", "2", "3"]
    anchor_sizes = tuple((int(s),) for s in cfg["anchor_sizes"])
    aspect_ratios = (tuple(float(r) for r in cfg["aspect_ratios"]),) * len(anchor_sizes)
    representation = cfg["representation_size"]
    mask_channels = cfg["mask_head_channels"]
    box_predictor = CosineBoxPredictor(
        representation,
        num_classes,
        cfg["cosine_scale"],
        cfg["learn_scale"],
        cfg.get("regression_relu", False),
        cfg.get("extra_logits", 0),  # set by train_base from the method's loss, kept in the checkpoint's config
    )
    if cfg.get("mask_weight_transfer", False):
        mask_predictor = MaskWeightTransferPredictor(
            mask_channels, mask_channels, box_predictor, cfg["mask_mlp"], cfg.get("mask_transfer_detach", True)
        )
    else:
        mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, num_classes)
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=cfg["min_size"],
        max_size=cfg["max_size"],
        image_mean=list(cfg["image_mean"]),
        image_std=list(cfg["image_std"]),
        rpn_anchor_generator=AnchorGenerator(anchor_sizes, aspect_ratios),
        rpn_pre_nms_top_n_train=cfg["rpn_pre_nms_top_n_train"],
        rpn_pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"],
        rpn_post_nms_top_n_train=cfg["rpn_post_nms_top_n_train"],
        rpn_post_nms_top_n_test=cfg["rpn_post_nms_top_n_test"],
        rpn_batch_size_per_image=cfg["rpn_batch_size_per_image"],
        box_roi_pool=MultiScaleRoIAlign(levels, 7, sampling_ratio=cfg["sampling_ratio"]),
        box_head=BoxHead(channels * 7 * 7, representation),
        box_predictor=box_predictor,
        box_score_thresh=cfg["box_score_thresh"],
        box_nms_thresh=cfg["box_nms_thresh"],
        box_detections_per_img=cfg["box_detections_per_img"],
        box_batch_size_per_image=cfg["box_batch_size_per_image"],
        box_positive_fraction=cfg["box_positive_fraction"],
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, sampling_ratio=cfg["sampling_ratio"]),
        mask_head=MaskRCNNHeads(channels, [mask_channels] * 4, 1),
        mask_predictor=mask_predictor,
    )
    # same module and state; a method's classification loss, LST's target-class sampling (lst.modeling.roi_heads)
    model.roi_heads.__class__ = LstRoIHeads
    model.roi_heads.fallback_positives = cfg.get("target_fallback_positives")
    model.roi_heads.box_loss_beta = cfg.get("box_loss_beta", TORCHVISION_BOX_LOSS_BETA)
    return model


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass
class Outputs:
    """What a forward of the model computed on the way, recorded by :func:`recorded_outputs`."""

    images: ImageList | None = None  # the batch as the backbone saw it: resized, normalised, padded
    features: dict[str, torch.Tensor] | None = None  # the FPN maps, by level
    objectness: list[torch.Tensor] | None = None  # the RPN head's raw outputs per level: [N, A, H, W]
    anchor_deltas: list[torch.Tensor] | None = None  # and [N, 4A, H, W]


@contextlib.contextmanager
def recorded_outputs(model: nn.Module) -> Iterator[Outputs]:
    """Record the transformed batch, the FPN features and the RPN head's outputs of the forwards of ``model``
    inside the block (the last one's), as they are: in the graph, with their gradients."""
    outputs = Outputs()

    def keep(**fields: Callable[[Any], Any]) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            for name, pick in fields.items():
                setattr(outputs, name, pick(output))

        return hook

    handles = [
        model.transform.register_forward_hook(keep(images=lambda out: out[0])),
        model.backbone.register_forward_hook(keep(features=lambda out: out)),
        model.rpn.head.register_forward_hook(keep(objectness=lambda out: out[0], anchor_deltas=lambda out: out[1])),
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def box_features(model: nn.Module, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
    """fc7 features of the given boxes (xyxy in the images' own pixels), resized with the images as in training."""
    device = model_device(model)
    images = [image.to(device) for image in images]
    targets = [{"boxes": b.to(device)} for b in boxes]
    image_list, targets = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    resized = [t["boxes"] for t in targets]
    pooled = model.roi_heads.box_roi_pool(features, resized, image_list.image_sizes)
    return list(model.roi_heads.box_head(pooled).split([len(b) for b in resized]))


def num_outputs(state_dict: dict[str, torch.Tensor]) -> int:
    """Number of classifier outputs (background included) of a model state dict."""
    return state_dict[BOX_PREDICTOR + "bbox_pred.bias"].shape[0] // 4


def grow_classifier(
    state_dict: dict[str, torch.Tensor], num_classes: int, generator: torch.Generator
) -> OrderedDict[str, torch.Tensor]:
    """Extend the class-specific layers to ``num_classes`` outputs; old rows are copied exactly.

    New rows, as the released code does: cls ~ N(0, 0.01), box regression ~ N(0, 0.001), biases 0; new mask
    logit filters get torchvision's own init for them (Kaiming normal, fan-out).
    """
    grown = OrderedDict(state_dict)
    old = num_outputs(state_dict)
    if num_classes < old:
        raise ValueError(f"cannot grow a classifier of {old} outputs to {num_classes}")
    extra = num_classes - old

    def extend(key: str, rows: int, std: float | None, at: int | None = None) -> None:
        tensor = state_dict[key]
        shape = (rows, *tensor.shape[1:])
        if std is None:
            new = torch.zeros(shape, dtype=tensor.dtype)
        else:
            new = torch.randn(shape, generator=generator, dtype=tensor.dtype) * std
        at = len(tensor) if at is None else at
        grown[key] = torch.cat([tensor[:at], new, tensor[at:]])

    extend(BOX_PREDICTOR + "cls_score.weight", extra, 0.01, at=old)  # before the loss's extra logits
    extend(BOX_PREDICTOR + "bbox_pred.weight", 4 * extra, 0.001)
    extend(BOX_PREDICTOR + "bbox_pred.bias", 4 * extra, None)
    if MASK_LOGITS + "weight" in state_dict:  # absent with mask weight transfer: masks follow the cls rows
        # Kaiming normal, fan-out mode, of a 1x1 conv with num_classes output channels
        extend(MASK_LOGITS + "weight", extra, (2.0 / num_classes) ** 0.5)
        extend(MASK_LOGITS + "bias", extra, None)
    return grown
