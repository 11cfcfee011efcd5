"""Write the embedded synthetic LVIS-format dataset (seeded, byte-identical for a seed)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from lst.data.demo import DemoSpec, generate_demo
from lst.errors import ConfigError
from lst.steps import require, step

log = logging.getLogger(__name__)


@step
def main(cfg: dict[str, Any]) -> None:
    (out_dir,) = require(cfg, "paths.out_dir")
    unknown = sorted(set(cfg["demo"]) - {field.name for field in dataclasses.fields(DemoSpec)})
    if unknown:
        raise ConfigError(f"demo.{unknown[0]}: not a field of lst.data.demo.DemoSpec")
    files = generate_demo(out_dir, DemoSpec(**cfg["demo"]))
    log.info("wrote the demo dataset: %s", ", ".join(f"{k}={v}" for k, v in files.items()))


if __name__ == "__main__":
    main()
