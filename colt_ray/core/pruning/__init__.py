"""Masks and magnitude pruning (score x budget x selection)."""

from colt_ray.core.pruning.magnitude import count_to_prune, magnitude_scores, prune
from colt_ray.core.pruning.mask import Mask, PackedMask, intersect, jaccard, layer_overlap, pack_mask, unpack_mask, vote

__all__ = [
    "Mask",
    "PackedMask",
    "pack_mask",
    "unpack_mask",
    "intersect",
    "vote",
    "jaccard",
    "layer_overlap",
    "prune",
    "magnitude_scores",
    "count_to_prune",
]
