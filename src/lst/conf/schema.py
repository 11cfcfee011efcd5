"""The types of lst's Hydra config: every key, its type and, for a choice, its allowed values.

The values live in the yaml files (``lst.yaml``, ``train/shared.yaml``, the groups ``model/``, ``method/`` and
``preset/``); these dataclasses only say what a key may hold. ``lst.yaml`` starts from :class:`LstConfig`
(stored in Hydra's ConfigStore as ``schema``), so composing the config checks every yaml file and every
override: a key that is not here, a value of the wrong type, a choice outside its ``Enum`` or a number outside
its range (``ranged``) fails at composition, and ``lst.conf.config_error`` says so in one line naming the key.
Torch-free.

A key added to a yaml file needs its field here. A choice (an ``Enum`` below) is named by its members'
names; the code compares the composed strings (``OmegaConf.to_container(..., enum_to_str=True)``).
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from lst.conf.typed import above, at_least, between


class Optimizer(Enum):
    sgd = "sgd"  # maskrcnn-benchmark's (the released code's), with momentum
    adamw = "adamw"


class Schedule(Enum):
    multistep = "multistep"  # the released code's: lr x gamma at each of `steps`
    cosine = "cosine"


class Amp(Enum):
    off = "off"
    bf16 = "bf16"  # CPU or GPU
    fp16 = "fp16"  # GPU only, with loss scaling


class JointBudget(Enum):
    equal_images = "equal_images"  # as many images as the base phase and every incremental phase together
    base = "base"  # train_base.iterations as they are


class ReplayVariant(Enum):
    cycle = "cycle"
    with_replacement = "with_replacement"
    without_replacement = "without_replacement"
    fixed_draw = "fixed_draw"


class QuotaRounding(Enum):
    half_even = "half_even"  # numpy's round (the notebooks'): 2.5 -> 2
    half_up = "half_up"  # floor(x + 0.5)


class Remainder(Enum):
    last_epoch_unshuffled = "last_epoch_unshuffled"
    next_epoch = "next_epoch"


class Backbone(Enum):
    small = "small"
    resnet18_fpn = "resnet18_fpn"
    resnet50_fpn = "resnet50_fpn"
    mobilenet_v2_fpn = "mobilenet_v2_fpn"


def ranged(bounds: dict[str, Any]) -> Any:
    """A key with a range (lst.conf.typed: ``at_least``, ``above``, ``between``), for each element of a list;
    lst.conf.compose checks it."""
    return field(default=MISSING, metadata=bounds)


def choices(enum: type[Enum]) -> tuple[str, ...]:
    """The allowed values of a choice, in their order."""
    return tuple(member.name for member in enum)


@dataclass
class DatasetConfig:
    name: str = MISSING
    train_json: str | None = MISSING
    val_json: str | None = MISSING
    image_root: Any = MISSING  # a folder, or {train: DIR, val: DIR}


@dataclass
class PhasesConfig:
    base: int | None = MISSING
    step: int | None = MISSING
    num_incremental: int | None = MISSING
    sizes: list[int] | None = MISSING


@dataclass
class TrainConfig:
    """A training phase's keys; their shared values: train/shared.yaml."""

    iterations: int = ranged(at_least(1))
    batch_size: int = ranged(at_least(1))
    optimizer: Optimizer = MISSING
    lr: float = ranged(at_least(0))
    momentum: float = ranged(between(0, 1))
    weight_decay: float = ranged(at_least(0))
    bias_lr_factor: float = ranged(at_least(0))
    weight_decay_bias: float | None = ranged(at_least(0))
    schedule: Schedule = MISSING
    steps: list[int] = ranged(at_least(0))
    gamma: float = ranged(above(0))
    warmup_iters: int = ranged(at_least(0))
    warmup_factor: float = ranged(between(0, 1))
    freeze_backbone_stages: int = ranged(between(0, 5))
    flip_prob: float = ranged(between(0, 1))
    checkpoint_period: int = ranged(at_least(1))
    log_period: int = ranged(at_least(1))
    eval_period: int = ranged(at_least(0))
    num_workers: int = ranged(at_least(0))
    amp: Amp = MISSING
    channels_last: bool = MISSING
    aspect_grouping: bool = MISSING


@dataclass
class BaseTrainConfig(TrainConfig):
    joint_budget: JointBudget = MISSING


@dataclass
class PhaseTrainConfig(TrainConfig):
    model_overrides: dict[str, Any] = MISSING  # keys of `model`, for the phases' training


@dataclass
class ModelConfig:
    backbone: Backbone = MISSING
    backbone_weights: str | None = MISSING
    fpn_channels: int = ranged(at_least(1))
    stride_in_1x1: bool = MISSING
    min_size: int = ranged(at_least(1))
    max_size: int = ranged(at_least(1))
    image_mean: list[float] = MISSING
    image_std: list[float] = ranged(above(0))
    anchor_sizes: list[int] = ranged(above(0))
    aspect_ratios: list[float] = ranged(above(0))
    rpn_pre_nms_top_n_train: int = ranged(at_least(1))
    rpn_pre_nms_top_n_test: int = ranged(at_least(1))
    rpn_post_nms_top_n_train: int = ranged(at_least(1))
    rpn_post_nms_top_n_test: int = ranged(at_least(1))
    rpn_batch_size_per_image: int = ranged(at_least(1))
    representation_size: int = ranged(at_least(1))
    mask_head_channels: int = ranged(at_least(1))
    sampling_ratio: int = ranged(at_least(0))
    cosine_scale: float = ranged(above(0))
    learn_scale: bool = MISSING
    regression_relu: bool = MISSING
    box_score_thresh: float = ranged(between(0, 1))
    box_nms_thresh: float = ranged(between(0, 1))
    box_detections_per_img: int = ranged(at_least(1))
    box_batch_size_per_image: int = ranged(at_least(1))
    box_positive_fraction: float = ranged(between(0, 1))
    box_loss_beta: float = ranged(at_least(0))
    target_fallback_positives: int = ranged(at_least(0))
    mask_weight_transfer: bool = MISSING
    mask_mlp: bool = MISSING
    mask_transfer_detach: bool = MISSING


@dataclass
class SmallModelConfig(ModelConfig):
    """model/small.yaml: the small backbone's widths besides (stored as schema/model/small)."""

    small_widths: list[int] = ranged(at_least(1))


@dataclass
class MethodLossConfig:
    """A method's RoI classification loss: a loss of lst.losses and its settings (checked against the loss's
    dataclass in lst.losses.settings); torchvision's softmax cross-entropy unless a method file says."""

    name: str = "cross_entropy"
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """A method file's block: its family (a module of lst.methods or of method_dirs) and the family's settings,
    which lst.methods.load_method checks against the family's Settings dataclass; its classification loss;
    for an incremental method, the method file of its phase-0 model (one base model per distinct ``base``)."""

    name: str = MISSING
    family: str = MISSING
    settings: dict[str, Any] = MISSING
    loss: MethodLossConfig = field(default_factory=MethodLossConfig)
    base: str = "base"


@dataclass
class ReplayConfig:
    variant: ReplayVariant = MISSING
    quota_rounding: QuotaRounding = MISSING
    remainder: Remainder = MISSING
    world_size: int = ranged(at_least(1))


@dataclass
class DistillConfig:
    weight: float = ranged(at_least(0))
    group_images: int = ranged(at_least(1))


@dataclass
class MetaConfig:
    episodes: int = ranged(at_least(1))
    novel_per_episode: int = ranged(at_least(1))
    shots: int = ranged(at_least(1))
    queries: int = ranged(at_least(1))
    per_class: int = ranged(at_least(1))
    lr: float = ranged(at_least(0))
    scale: float = ranged(above(0))


@dataclass
class EvalConfig:
    score_thresh: float = ranged(between(0, 1))
    score_thresh_incremental: float = ranged(between(0, 1))
    max_dets: int = ranged(at_least(1))
    fixed_ap: bool = MISSING
    batch_size: int = ranged(at_least(1))
    amp: Amp = MISSING
    channels_last: bool = MISSING


@dataclass
class CheckConfig:
    decode_images: bool = MISSING
    workers: int = ranged(at_least(1))


@dataclass
class PathsConfig:
    data_dir: str | None = MISSING
    split_dir: str | None = MISSING
    init: str | None = MISSING
    source_weights: str | None = MISSING
    previous: str | None = MISSING
    replay: str | None = MISSING
    teacher_logits: str | None = MISSING
    meta: str | None = MISSING
    model: str | None = MISSING
    work_dir: str | None = MISSING
    eval_curve: str | None = MISSING
    out_dir: str | None = MISSING
    report: str | None = MISSING
    metrics: list[str] = MISSING
    per_class: list[str] = MISSING
    curves: list[str] = MISSING
    summary_table: str | None = MISSING
    summary: str | None = MISSING
    summary_html: str | None = MISSING
    forgetting_plot: str | None = MISSING
    per_class_plot: str | None = MISSING
    eval_curve_plot: str | None = MISSING
    detections: list[str] = MISSING
    gallery: str | None = MISSING


@dataclass
class ReportModel:
    method: str = MISSING
    phase: int = MISSING
    seed: int = 0
    base: str = "base"  # the phase-0 model the method starts from (method.base), for its phase-0 figures


@dataclass
class GalleryConfig:
    images: int = ranged(at_least(1))
    f1_images: int = ranged(at_least(1))


@dataclass
class ReportConfig:
    models: list[ReportModel] = MISSING
    reference: str | None = None  # the method the others are compared with, seed by seed
    gallery: GalleryConfig = MISSING


@dataclass
class LstConfig:
    seed: int = ranged(at_least(0))
    threads: int = ranged(at_least(1))
    device: str = MISSING
    dataset: DatasetConfig = MISSING
    phases: PhasesConfig = MISSING
    model: ModelConfig = MISSING
    train_base: BaseTrainConfig = MISSING
    train_phase: PhaseTrainConfig = MISSING
    method: MethodConfig = MISSING
    method_dirs: list[str] = MISSING  # users' folders of method files and family modules
    rfs_threshold: float = ranged(between(0, 1))
    replay: ReplayConfig = MISSING
    distill: DistillConfig = MISSING
    meta: MetaConfig = MISSING
    eval: EvalConfig = MISSING
    check: CheckConfig = MISSING
    demo: dict[str, Any] = MISSING  # fields of lst.data.demo.DemoSpec, checked by make_demo
    paths: PathsConfig = MISSING
    report: ReportConfig = MISSING
    phase: int = MISSING


def register() -> None:
    """Store the schema in Hydra's ConfigStore (idempotent): ``schema`` for lst.yaml, ``schema/model/small``."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="schema", node=LstConfig)
    store.store(group="schema/model", name="small", node=SmallModelConfig)
