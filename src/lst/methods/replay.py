"""replay: fine-tuning plus LST's instance-level balanced replay of the old classes (docs/method.md section 4).

Each epoch of a phase's stream holds every (image, new class) pair and n_c (image, c) pairs per old class c;
the draws follow the ``replay`` section (variant, quota rounding, remainder).
"""

from __future__ import annotations

import pandas as pd

from lst.methods.finetune import Finetune
from lst.methods.method import StreamRequest


class Replay(Finetune):
    """Fine-tuning on a stream that replays the old classes in an instance-balanced way."""

    def stream(self, request: StreamRequest) -> pd.DataFrame:
        return self.phase_stream(request, old_classes=True)
