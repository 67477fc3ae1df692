"""The ticket methods as specs: one ``MethodSpec`` per method in ``METHODS``, the one place every layer asks
about a method (config validation, the backends, resources, sweeps). Nobody compares method names.

Pure Python (no torch): the command line resolves and checks a run, and may start Ray, before the heavy
imports. A spec names its loop and its full-data trainer wrapper by import path; they are loaded when used.

Adding a method: a loop in ``methods.py`` (and a trainer wrapper if it needs one) plus one entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from colt_ray.core.registry import Registry


def load(path: str) -> Any:
    """The object at ``module:attribute``."""
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class MethodSpec:
    """One ticket method and the facts the other layers ask about it."""

    name: str
    loop: str  # module:function of the method's loop, ``loop(ctx, backend, sink, resume) -> CycleRecord``
    summary: str
    uses_shards: bool  # trains k shard models (and evaluates tickets apart); else one full-data trainer
    default_prune_rate: Optional[float]  # None: prunes once, straight to the target sparsity
    late_rewind: bool = False  # accepts rewind_step
    trains_weights: bool = True  # False: the ticket's weights are never trained (distillation is meaningless)
    sections: tuple[str, ...] = ()  # config sections only this method reads (others must leave them default)
    full_trainer: Optional[str] = None  # module:class wrapping the full-data TicketTrainer (a jackpot's search)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method's loop (imported on first use)."""
        return load(self.loop)(*args, **kwargs)

    def wrap_full_trainer(self, trainer: Any) -> Any:
        return load(self.full_trainer)(trainer) if self.full_trainer else trainer


METHODS: Registry[MethodSpec] = Registry("method")
_LOOPS = "colt_ray.core.tickets.methods"

METHODS.add(
    "colt",
    MethodSpec(
        "colt",
        f"{_LOOPS}:run_colt",
        "k shard models from theta_0, AND of their pruned masks, rewind, repeat",
        uses_shards=True,
        default_prune_rate=0.15,
        late_rewind=True,  # theta_k from a full-data pre-training of k steps (docs/algorithms.md, COLT variants)
    ),
)
METHODS.add(
    "imp",
    MethodSpec(
        "imp",
        f"{_LOOPS}:run_imp",
        "train, prune p of the survivors, rewind to theta_0 (or theta_k), retrain",
        uses_shards=False,
        default_prune_rate=0.20,
        late_rewind=True,
    ),
)
METHODS.add(
    "jackpot",
    MethodSpec(
        "jackpot",
        f"{_LOOPS}:run_jackpot",
        "a mask searched by scores on frozen pre-trained weights",
        uses_shards=False,
        default_prune_rate=None,
        trains_weights=False,
        sections=("jackpot",),
        full_trainer="colt_ray.core.tickets.jackpot:JackpotTrainer",
    ),
)


def methods_with(fact: Callable[[MethodSpec], bool]) -> list[str]:
    """Names of the methods for which ``fact(spec)`` holds."""
    return [n for n in METHODS if fact(METHODS.get(n))]
