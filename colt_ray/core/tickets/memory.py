"""Will k stacked shard models fit the device? Estimates and the check ``BatchedShards`` runs before any work."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Optional

import torch

from colt_ray.core.config import RecipeConfig
from colt_ray.core.data import DatasetBundle
from colt_ray.core.errors import ConfigError
from colt_ray.core.optim import OPTIMIZERS

USABLE_FRACTION = 0.9  # of the free device memory the stacked models may plan to use


def estimate_shard_bytes(model: torch.nn.Module, bundle: DatasetBundle, recipe: RecipeConfig) -> int:
    """Bytes one stacked shard needs: weights, gradients, optimizer state, buffers, activations of one batch
    (every leaf module's output, kept for backward and matched by a gradient: x2) and its data on the device."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    slots = OPTIMIZERS.get(recipe.optimizer).slots(recipe)
    first = next(model.parameters())
    acts = _activation_elements(model, bundle.in_shape, recipe.batch_size, first.dtype)
    data = bundle.train.x.numel() * bundle.train.x.element_size() + bundle.train.y.numel() * 8
    return int(weights * (2 + slots) + buffers + first.element_size() * 2 * acts + data)


def _activation_elements(model: torch.nn.Module, in_shape, batch: int, dtype: torch.dtype) -> int:
    """Elements of every leaf module's output for one batch, from a forward pass on the meta device."""
    meta = copy.deepcopy(model).to("meta")
    total = [0]
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + out.numel()))
        for m in meta.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        meta(torch.empty((batch, *in_shape), device="meta", dtype=dtype))
    for h in hooks:
        h.remove()
    return total[0]


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA ``mem_get_info``; CPU ``MemAvailable`` of /proc/meminfo."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def largest_fit(per_shard: Sequence[int], free: int) -> int:
    """How many of the shards (largest first, the safe order) fit in ``USABLE_FRACTION`` of ``free`` bytes."""
    budget, fit = USABLE_FRACTION * free, 0
    for b in sorted(per_shard, reverse=True):
        if b > budget:
            break
        budget, fit = budget - b, fit + 1
    return fit


def check_fits_memory(per_shard: Sequence[int], device: torch.device, free: Optional[int] = None) -> int:
    """Raise ConfigError("shards") unless all the shards fit the device; else return how many would."""
    free = free_memory(device) if free is None else int(free)
    fit = largest_fit(per_shard, free)
    if fit < len(per_shard):
        need, gib = sum(per_shard), 1024**3
        raise ConfigError(
            "shards",
            f"{len(per_shard)} stacked shard models need about {need / gib:.2f} "
            f"GiB but {device} has {free / gib:.2f} GiB free ({USABLE_FRACTION:.0%} usable); "
            f"at most {fit} fit: use --shards {max(1, fit)} or fewer, or --backend ray",
        )
    return fit
