"""Draw the dataset's gallery: the last phase's models on the same val images, beside the ground truth."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lst.data.phase_data import load_phase_plan, phase_data
from lst.errors import ConfigError
from lst.reporting.gallery import draw_gallery, gallery_settings, threshold_text
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    """A column per model of ``report.models`` in its last phase, of the first seed listed, whose detections
    ``paths.detections`` lists in the same order."""
    data_dir, split_dir, gallery, files = require(
        cfg, "paths.data_dir", "paths.split_dir", "paths.gallery", "paths.detections"
    )
    (image_root,) = require(cfg, "dataset.image_root")
    gallery_settings(cfg["report"]["gallery"])  # bad settings fail before anything is read
    models = cfg["report"]["models"]
    if not models:
        raise ConfigError("report.models: no models (the rule passes them)")
    phase, seed = max(int(model["phase"]) for model in models), int(models[0]["seed"])
    columns = [model["method"] for model in models if int(model["phase"]) == phase and int(model["seed"]) == seed]
    files = [files] if isinstance(files, str) else files
    if len(files) != len(columns):
        raise ConfigError(f"paths.detections: {len(files)} files for the {len(columns)} models of phase {phase}")
    data = phase_data(data_dir, split_dir, phase, "val", image_root, with_masks=False)
    detections = {name: Path(path) for name, path in zip(columns, files, strict=True)}
    thresholds = draw_gallery(data, load_phase_plan(split_dir), detections, cfg["report"]["gallery"], gallery)
    drawn = ", ".join(f"{name} {threshold_text(value)}" for name, value in thresholds.items())
    log.info("wrote %s (phase %d): %s", gallery, phase, drawn)


if __name__ == "__main__":
    main()
