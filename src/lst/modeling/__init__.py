"""Modeling: Mask R-CNN with LST's cosine box head, backbones, COCO weight conversion, checkpoints and
the mask head's targets. May import lst.data (docs/architecture.md)."""
