"""The paper's meta-module: an attention-based few-shot weight generator (Gidaris & Komodakis, 2018).

For a new class with instance features f_i (fc7 of its ground-truth boxes)::

    w_new = FC_avg(mean_i f_i) + FC_att(mean_i sum_b softmax_b(s * cos(Q f_i, k_b)) w_b)

with w_b the normalised classifier rows of the old classes. Q, FC_avg, FC_att start at the identity;
s is learnable (init 10). The released code never wired it in; here it is trained episodically on the
base classes (a few base classes play "novel" in each episode, their weights generated from a few
shots, and all classes are classified with the generated rows) and then initialises the new rows of
every incremental phase. One deviation, so that one module serves every phase: the key of an old
class is a learned linear map of its own classifier row, k_b = K w_b (K also starts at the identity),
instead of a free vector per base class, which would not exist for the classes of later phases.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lst.data.dataset import DetectionData
from lst.errors import ConfigError, DataError
from lst.methods.method import META, PhaseTraining
from lst.modeling.checkpoint import load_checkpoint
from lst.modeling.mask_rcnn import box_features

log = logging.getLogger(__name__)


def _identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim, bias=False)
    nn.init.eye_(layer.weight)
    return layer


class WeightGenerator(nn.Module):
    def __init__(self, dim: int, scale: float = 10.0):
        super().__init__()
        self.query = _identity_linear(dim)
        self.key = _identity_linear(dim)
        self.fc_avg = _identity_linear(dim)
        self.fc_att = _identity_linear(dim)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, features: list[torch.Tensor], old_weights: torch.Tensor) -> torch.Tensor:
        """One weight row per entry of ``features`` (each (n_i, d)), attending over ``old_weights`` (B, d)."""
        base = F.normalize(old_weights, dim=1)
        keys = F.normalize(self.key(base), dim=1)
        rows = []
        for shots in features:
            shots = F.normalize(shots, dim=1)
            attention = torch.softmax(self.scale * F.normalize(self.query(shots), dim=1) @ keys.t(), dim=1)
            rows.append(self.fc_avg(shots.mean(0)) + self.fc_att((attention @ base).mean(0)))
        return torch.stack(rows)


@torch.no_grad()
def class_features(
    model: nn.Module, data: DetectionData, category_ids: list[int], per_class: int, batch_size: int, seed: int = 0
) -> dict[int, torch.Tensor]:
    """Up to ``per_class`` fc7 features of ground-truth boxes of each class, from seeded random images."""
    model.eval()
    rng = np.random.default_rng(seed)
    annotations = data.annotations[data.annotations["category_id"].isin(category_ids)]
    chosen = []
    for _, group in annotations.groupby("category_id"):
        chosen.append(group.iloc[rng.permutation(len(group))[:per_class]])
    chosen_ids = set(np.concatenate([g["annotation_id"].to_numpy() for g in chosen]).tolist()) if chosen else set()
    image_ids = sorted({int(i) for g in chosen for i in g["image_id"]})
    found: dict[int, list[torch.Tensor]] = {int(c): [] for c in category_ids}
    for start in range(0, len(image_ids), batch_size):
        images, boxes, classes = [], [], []
        for image_id in image_ids[start : start + batch_size]:
            image, target = data.load(image_id)
            keep = torch.tensor([int(a) in chosen_ids for a in target["annotation_ids"]], dtype=torch.bool)
            images.append(image)
            boxes.append(target["boxes"][keep])
            classes.append(data.category_ids[target["labels"][keep].numpy() - 1])
        for features, labels in zip(box_features(model, images, boxes), classes, strict=True):
            for feature, category_id in zip(features.cpu(), labels, strict=True):
                found[int(category_id)].append(feature)
    return {c: torch.stack(f) for c, f in found.items() if f}


def train_generator(
    generator: WeightGenerator,
    features: dict[int, torch.Tensor],
    weights: dict[int, torch.Tensor],
    episodes: int,
    novel_per_episode: int,
    shots: int,
    queries: int,
    lr: float,
    seed: int = 0,
    log_period: int = 50,
) -> list[float]:
    """Episodic training on base classes; returns the loss of each episode."""
    rng = np.random.default_rng(seed)
    classes = sorted(c for c in features if c in weights)
    if len(classes) <= novel_per_episode:
        raise ConfigError(
            f"meta.novel_per_episode: {novel_per_episode} novel classes per episode need more than the "
            f"{len(classes)} base classes with features"
        )
    optimizer = torch.optim.Adam(generator.parameters(), lr=lr)
    losses = []
    for episode in range(1, episodes + 1):
        novel = rng.choice(classes, size=novel_per_episode, replace=False).tolist()
        old = [c for c in classes if c not in novel]
        support, query, labels = [], [], []
        for c in novel:
            order = rng.permutation(len(features[c]))
            support.append(features[c][order[:shots]])
        for index, c in enumerate(old + novel):
            order = rng.permutation(len(features[c]))[:queries]
            query.append(features[c][order])
            labels += [index] * len(order)
        old_weights = torch.stack([weights[c] for c in old])
        generated = generator(support, old_weights)
        classifier = F.normalize(torch.cat([old_weights, generated]), dim=1)
        logits = generator.scale * F.normalize(torch.cat(query), dim=1) @ classifier.t()
        loss = F.cross_entropy(logits, torch.tensor(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
        if episode % log_period == 0 or episode == episodes:
            log.info("meta episode %d/%d  loss %.3f", episode, episodes, np.mean(losses[-log_period:]))
    return losses


def generate_new_rows(phase: PhaseTraining, per_class: int, batch_size: int) -> None:
    """Replace the new classes' random classifier rows of ``phase.model`` by the meta-module's generated
    weights (the trained module: ``phase.inputs["meta"]``), from ``per_class`` features of each new class."""
    meta_path = phase.inputs[META]
    generator_checkpoint = load_checkpoint(meta_path, required=("model",))
    model, num_old = phase.model, phase.num_old
    rows = model.roi_heads.box_predictor.cls_score.weight
    generator = WeightGenerator(rows.shape[1])
    generator.load_state_dict(generator_checkpoint["model"])
    new_ids = phase.data.category_ids[num_old:].tolist()
    features = class_features(model, phase.data, new_ids, per_class, batch_size, phase.seed)
    missing = [c for c in new_ids if c not in features]
    if missing:
        raise DataError(f"meta-module: no training boxes for new classes {missing[:5]}")
    with torch.no_grad():
        new_rows = generator([features[c] for c in new_ids], rows[1 : 1 + num_old])
        rows[1 + num_old : 1 + len(phase.data.category_ids)] = new_rows  # a loss's extra rows stay last
    log.info("meta-module %s generated the rows of %d new classes", meta_path, len(new_ids))
