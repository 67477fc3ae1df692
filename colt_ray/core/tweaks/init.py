"""Layer-wise re-scaled initialisation of a sparse ticket (the optional tweak ``density-rescale``, formerly
``rescale-init``).

This is not GradInit. GradInit (Zhu et al. 2021; the ToST paper's "LRsI" tweak) learns one scale per layer
from gradients on data. This is a closed-form, data-free rule of this project: a layer that keeps a
fraction ``d`` of its weights has its surviving initial weights multiplied by ``1 / sqrt(d)``, so the
variance of each unit's pre-activation (a sum over surviving inputs) is the dense network's again. Dense
layers (d = 1) are untouched, so the tweak changes nothing at cycle 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from colt_ray.core.pruning import Mask


@torch.no_grad()
def rescale_to_density(model: nn.Module, mask: Mask) -> dict[str, float]:
    """Multiply every masked parameter of ``model`` by ``1/sqrt(density)`` in place; return the scales used."""
    params = dict(model.named_parameters())
    scales: dict[str, float] = {}
    for name, density in mask.density().items():
        if 0.0 < density < 1.0:
            scales[name] = 1.0 / math.sqrt(density)
            params[name].mul_(scales[name])
    return scales
