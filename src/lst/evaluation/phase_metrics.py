"""A model's metrics on a phase's val set: LVIS metrics, AP of each phase's classes, AP by instance bins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lst.errors import ConfigError
from lst.evaluation.lvis_eval import IOU_TYPES, evaluate_lvis, mean_ap

# AP by training-instance count, [low, high): the paper's "< 10 instances" claim among them
INSTANCE_BINS = (("AP<10", 0, 10), ("AP10-100", 10, 100), ("AP100-1000", 100, 1000), ("AP>=1000", 1000, float("inf")))


def phase_metrics(
    gt: dict[str, Any], detections: pd.DataFrame, seen: pd.DataFrame, phase: int, **evaluation: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, per_class) tables for bbox and segm; ``seen`` is the phase plan of the classes of phases
    0..``phase`` (category_id, phase, instance_count, ...); ``evaluation`` goes to ``evaluate_lvis``."""
    metrics, per_class = [], []
    for iou_type in IOU_TYPES:
        result = evaluate_lvis(gt, detections, iou_type, **evaluation)
        values = dict(result.metrics)
        for j in range(phase + 1):
            values[f"AP_phase{j}"] = mean_ap(result.per_class, seen.loc[seen["phase"] == j, "category_id"])
        for name, low, high in INSTANCE_BINS:
            in_bin = seen["instance_count"].between(low, high, inclusive="left")
            values[name] = mean_ap(result.per_class, seen.loc[in_bin, "category_id"])
        metrics += [{"iou_type": iou_type, "metric": k, "value": float(v)} for k, v in values.items()]
        classes = seen.merge(result.per_class[["category_id", "num_gt", "ap"]], on="category_id")
        per_class.append(classes.assign(iou_type=iou_type))
    per_class_table = pd.concat(per_class, ignore_index=True)
    per_class_table["num_gt"] = per_class_table["num_gt"].astype(np.int64)
    return pd.DataFrame(metrics), per_class_table


def evaluation_options(eval_cfg: dict[str, Any]) -> dict[str, Any]:
    """``evaluate_lvis`` keyword arguments from the Hydra ``eval`` section."""
    max_dets = eval_cfg["max_dets"]
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 1:
        raise ConfigError(f"eval.max_dets: {max_dets!r} is not a positive number of detections per image")
    return {"max_dets_per_image": max_dets, "fixed_ap": bool(eval_cfg.get("fixed_ap", False))}
