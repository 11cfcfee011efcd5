"""lst: Learning to Segment the Tail (Hu et al., CVPR 2020) as a reproducible pipeline."""

__version__ = "0.1.0"
