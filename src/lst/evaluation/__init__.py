"""Evaluation: inference, the LVIS evaluator (lvis-api's numbers), a phase's metrics, and periodic
evaluation during training. ``lvis_eval``, ``lvis_match`` and ``phase_metrics`` are torch-free.
May import data, modeling, engine (not methods)."""
