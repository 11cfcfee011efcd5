"""Hydra config tree of lst (a package so Hydra finds it when a step is imported, not only run)."""
