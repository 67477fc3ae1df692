"""Pruning = score x budget x selection.

* score: how much a weight matters (``magnitude_scores``: |w|);
* budget: how many of the surviving weights each tensor loses (``budgets.BUDGETS``: ``global`` shares one
  threshold across all tensors, ``layerwise`` prunes the same fraction of every tensor);
* selection: the lowest-scoring *surviving* weights go, ties broken by flat index (lower index first, in
  the mask's tensor order), so a mask is the same on every machine and a pruned weight never returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from colt_ray.core.pruning.budgets import BUDGETS
from colt_ray.core.pruning.mask import Mask

ScoreFn = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]  # a score: weights -> per-weight scores


def magnitude_scores(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """|w| per weight (as float32 on the CPU)."""
    return {n: w.detach().to("cpu", torch.float32).abs() for n, w in weights.items()}


def count_to_prune(fraction: float, alive: int) -> int:
    """round(fraction * alive), the count torch.nn.utils.prune uses for a float amount."""
    return int(round(fraction * alive))


def prune(scores: Mapping[str, torch.Tensor], mask: Mask, fraction: float, budget: str = "global") -> Mask:
    """Prune ``fraction`` of the weights still alive in ``mask`` by lowest score; return the new mask.

    The result is a subset of ``mask``. ``budget`` names a ``budgets.BUDGETS`` entry (``global``,
    ``layerwise``): how the round's pruning is split into selections of one shared threshold each.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"prune fraction must be in [0, 1], got {fraction}")
    plan = BUDGETS.get(budget).plan
    mask.check_like(scores)
    out: dict[str, torch.Tensor] = {}
    for names, part in plan({n: int(mask[n].sum()) for n in mask.names()}, fraction):
        out.update(_select(scores, mask, names, part).items())
    return Mask({n: out.get(n, mask[n]) for n in mask.names()})  # a tensor the plan leaves out keeps its weights


def _select(scores: Mapping[str, torch.Tensor], mask: Mask, names: list[str], fraction: float) -> Mask:
    """Prune the ``fraction`` lowest-scoring alive weights across ``names`` (one shared threshold)."""
    alive_idx = [mask[n].reshape(-1).nonzero().squeeze(1) for n in names]
    alive_scores = torch.cat([scores[n].reshape(-1).to(torch.float32)[i] for n, i in zip(names, alive_idx)])
    k = count_to_prune(fraction, alive_scores.numel())
    out = {n: mask[n].clone() for n in names}
    if k == 0:
        return Mask(out)
    # stable sort keeps equal scores in concatenation order = (tensor order, flat index): the tie-break
    order = torch.sort(alive_scores, stable=True).indices[:k]
    offsets = torch.tensor([0] + [len(i) for i in alive_idx]).cumsum(0)
    for j, n in enumerate(names):
        lo, hi = int(offsets[j]), int(offsets[j + 1])
        hit = order[(order >= lo) & (order < hi)] - lo
        flat = out[n].view(-1)
        flat[alive_idx[j][hit]] = False
    return Mask(out)
