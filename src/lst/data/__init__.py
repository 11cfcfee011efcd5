"""Data: LVIS/COCO json ingestion, the Parquet tables and their schemas, the class-to-phase plan, sample
streams (replay included), data checks, synthetic and demo data; and, torch-side, the image dataset.

Torch-free, so that the data steps start fast, except ``dataset``, ``masks`` and ``phase_data`` (which
this ``__init__`` does not import). Imports nothing of lst above it (docs/architecture.md).
"""
