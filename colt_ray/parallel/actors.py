"""Trainer actors: ``ShardTrainer`` (a plain class), the one factory that makes it remote, and two pools.

A pool is "the k trainers of a run": ``RayPool`` holds one actor per trainer and trains them concurrently;
``LocalPool`` holds the same plain objects in this process (unit tests, debugging). Both take theta as an
object returned by ``put`` (an ``ObjectRef`` on Ray, the dict itself locally) and the mask as a numpy dict,
and return the trainers' ``TrainOutcome``s in index order. Nothing device-resident crosses a process.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Sequence

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import RunError
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.trainer import FULL, TicketTrainer, TrainOutcome
from colt_ray.parallel.resources import ActorResources

NumpyMask = Optional[dict[str, np.ndarray]]


class ShardFailedError(RunError):
    """A trainer actor died more often than its restart budget allows; the run cannot continue."""


class ShardTrainer:
    """One trainer of a run, alive for the whole run: COLT shard ``index`` (>= 0) or the full-data model
    (``FULL``, IMP). Loads its data once in ``__init__``, so a restarted actor is whole again."""

    def __init__(self, cfg: RunConfig, index: int):
        torch.set_num_threads(cfg.resources.threads)  # same thread count as the local backend: bitwise equal
        self.index = index
        self.trainer = TicketTrainer.for_full(cfg) if index == FULL else TicketTrainer.for_shard(cfg, index)

    def run(self, theta: dict[str, np.ndarray], mask: NumpyMask, cycle: int, prune_next: bool = True,
            capture_step: int = 0) -> TrainOutcome:
        """Train from ``theta`` under ``mask`` (numpy dict, None = dense) and prune if ``prune_next``."""
        theta = {k: v if v.flags.writeable else v.copy() for k, v in theta.items()}  # object-store arrays are read-only
        m = Mask.from_numpy(mask) if mask is not None else None
        return self.trainer.run(theta, m, cycle, prune_next, capture_step)

    def pid(self) -> int:
        """The process id (tests kill actors; a restarted actor has a new one)."""
        return os.getpid()


@functools.lru_cache(maxsize=None)
def _remote_class(cls: type) -> Any:
    return ray.remote(cls)


def create_actor(cls: type, resources: ActorResources, *args: Any, strategy: Any = None, **kwargs: Any) -> Any:
    """The one factory: wrap the plain class ``cls`` with ``ray.remote`` and start it with ``resources``."""
    opts = resources.options()
    if strategy is not None:
        opts["scheduling_strategy"] = strategy
    return _remote_class(cls).options(**opts).remote(*args, **kwargs)


def trainer_label(index: int) -> str:
    return "the full-data trainer" if index == FULL else f"shard {index}"


class LocalPool:
    """The run's trainers as plain objects in this process, one after another."""

    def __init__(self, cfg: RunConfig, indices: Sequence[int], trainer_cls: type = ShardTrainer):
        self.indices = list(indices)
        self.trainers = [trainer_cls(cfg, i) for i in self.indices]

    def put(self, theta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return theta

    def ready(self) -> list[int]:
        return [t.pid() for t in self.trainers]

    def run(self, theta: Any, mask: NumpyMask, cycle: int, prune_next: bool, capture_step: int = 0) -> list[TrainOutcome]:
        return [t.run(theta, mask, cycle, prune_next, capture_step) for t in self.trainers]

    def close(self) -> None:
        self.trainers = []


class RayPool:
    """One ``ShardTrainer`` actor per trainer, trained concurrently. In a placement group (a Tune trial),
    trainer i goes to bundle ``len(bundles) - k + i``: the last k bundles, after the trial's own."""

    def __init__(self, cfg: RunConfig, indices: Sequence[int], resources: ActorResources,
                 trainer_cls: type = ShardTrainer, placement_group: Optional[PlacementGroup] = None):
        self.indices = list(indices)
        self.restarts = resources.max_restarts
        self.in_flight: Optional[int] = None  # the cycle being trained, for observers (tests)
        self._puts: dict[int, tuple[Any, Any]] = {}
        strategies = bundle_strategies(placement_group, len(self.indices), resources)
        self.actors = [create_actor(trainer_cls, resources, cfg, i, strategy=s) for i, s in zip(self.indices, strategies)]

    def ready(self) -> list[int]:
        """Wait until every actor has loaded its data; their process ids. Raises if one cannot start."""
        return [self._get(i, a.pid.remote(), "while starting") for i, a in zip(self.indices, self.actors)]

    def put(self, theta: dict[str, np.ndarray]) -> Any:
        """``ray.put`` a rewind point once; the same dict object gives the same reference."""
        key = id(theta)
        if key not in self._puts:
            self._puts[key] = (theta, ray.put(theta))  # keep theta alive so its id is not reused
        return self._puts[key][1]

    def run(self, theta: Any, mask: NumpyMask, cycle: int, prune_next: bool, capture_step: int = 0) -> list[TrainOutcome]:
        """Every actor trains once; a dead actor is restarted by Ray and its call retried (max_task_retries)."""
        ref = theta if isinstance(theta, ray.ObjectRef) else self.put(theta)
        self.in_flight = cycle
        try:
            futures = [a.run.remote(ref, mask, cycle, prune_next, capture_step) for a in self.actors]
            return [self._get(i, f, f"in cycle {cycle}") for i, f in zip(self.indices, futures)]
        finally:
            self.in_flight = None

    def _get(self, index: int, future: Any, when: str) -> Any:
        try:
            return ray.get(future)
        except RayActorError as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            if getattr(exc, "actor_init_failed", False):  # its __init__ raised: the last line is the error
                raise ShardFailedError(f"{trainer_label(index)} could not start: {lines[-1].strip()}") from None
            why = lines[0]
            raise ShardFailedError(
                f"{trainer_label(index)} died {when} and could not be brought back "
                f"within {self.restarts} restarts ({why})"
            ) from None
        except RayTaskError as exc:  # an error raised by the training itself: surface it as if local
            if isinstance(exc.cause, Exception):
                raise exc.cause from None
            raise

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self._puts = [], {}


def bundle_strategies(pg: Optional[PlacementGroup], k: int, resources: ActorResources) -> list[Any]:
    """Scheduling strategy per trainer: None outside a placement group, else the last k bundles of ``pg``
    (checked to fit, so a too-small bundle is an error, not a run waiting forever)."""
    if pg is None:
        return [None] * k
    specs = pg.bundle_specs
    if len(specs) < k:
        raise ValueError(f"placement group has {len(specs)} bundles; this run needs one per trainer ({k}) "
                         "after the trial's own (see colt_ray.parallel.resources.placement_bundles)")
    first = len(specs) - k
    for i in range(first, len(specs)):
        if specs[i].get("CPU", 0) < resources.num_cpus or specs[i].get("GPU", 0) < resources.num_gpus:
            raise ValueError(f"placement group bundle {i} {specs[i]} cannot hold a trainer asking for "
                             f"{resources.num_cpus:g} CPU, {resources.num_gpus:g} GPU")
    return [PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=first + i,
                                             placement_group_capture_child_tasks=True) for i in range(k)]
