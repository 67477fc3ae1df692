"""Masks and magnitude pruning (score x budget x selection).

The names below are loaded on first use (PEP 562), so that ``colt_ray.core.pruning.budgets`` (pure Python,
read by the config) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Mask": "mask",
    "PackedMask": "mask",
    "pack_mask": "mask",
    "unpack_mask": "mask",
    "intersect": "mask",
    "vote": "mask",
    "jaccard": "mask",
    "layer_overlap": "mask",
    "prune": "magnitude",
    "magnitude_scores": "magnitude",
    "count_to_prune": "magnitude",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
