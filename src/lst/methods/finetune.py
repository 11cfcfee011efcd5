"""finetune: each phase trains on its new classes alone, from the previous phase's model.

The lower bound of the incremental methods: no replay, no distillation, softmax cross-entropy. Every
extension point is the base class's (lst.methods.method).
"""

from __future__ import annotations

from lst.methods.method import Method


class Finetune(Method):
    """Fine-tuning on each phase's (image, new class) pairs."""
