"""Turn a COCO-trained Mask R-CNN checkpoint into an initial checkpoint without class-specific layers."""

from __future__ import annotations

import logging
from typing import Any

from lst.modeling.weights import trim_checkpoint
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    source, out = require(cfg, "paths.source_weights", "paths.init")
    summary = trim_checkpoint(source, out)
    log.info(
        "trimmed %s (%s layout): kept %d tensors, dropped %s; wrote %s",
        source, summary["source"], summary["num_kept"], summary["dropped"], out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
