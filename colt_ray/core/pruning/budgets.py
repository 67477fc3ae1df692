"""Pruning budgets: how many of the surviving weights each tensor loses, one ``Budget`` per name in ``BUDGETS``
(the registry ``--budget`` reads; jaxpruner's injected ``sparsity_distribution_fn``).

A budget splits one round's pruning into selections: ``plan(alive, fraction)`` maps the mask's tensors (name
-> surviving weights, in the mask's order) to ``(tensor names, fraction)`` pairs, and each pair prunes that
fraction of the pair's surviving weights below one shared threshold (``magnitude.prune``); a tensor no pair
names loses nothing. A new budget is one entry here. Pure Python (no torch), so the command line checks a
name before it imports anything heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from colt_ray.core.registry import Registry

Plan = list[tuple[list[str], float]]


@dataclass(frozen=True)
class Budget:
    name: str
    help: str
    plan: Callable[[dict[str, int], float], Plan]


BUDGETS: Registry[Budget] = Registry("budget", ordered=True)


def add(budget: Budget) -> Budget:
    BUDGETS.add(budget.name, budget)
    return budget


add(Budget("global", "one threshold across all pruned tensors", lambda alive, fraction: [(list(alive), fraction)]))
add(
    Budget(
        "layerwise",
        "the same fraction of every tensor's surviving weights",
        lambda alive, fraction: [([n], fraction) for n in alive],
    )
)
