"""``Coordinator``: holds one ticket search on Ray, in the driver's process (the CLI, or a Tune trial).

Its trainer actors are created first (their processes start and import torch while the driver loads the
data), then ``attach`` puts the dataset's arrays and theta_0 in the object store once; every call passes
those references. For COLT, k shard actors form the mask chain and one evaluator actor trains the tickets on
the full data beside it (README, "Backends and speed"): the core's loop submits each evaluation and never waits for it
before the next cycle's shards. IMP and jackpots have one full-data trainer actor.

The method loop is the core's (``run_method``): the coordinator only supplies the callables, so masks are
intersected and records built exactly as in the local backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

import ray
import torch
from ray.util.placement_group import PlacementGroup, get_current_placement_group, remove_placement_group

from colt_ray.core.config import RunConfig
from colt_ray.core.data import bundle_arrays
from colt_ray.core.errors import stderr_line
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.methods import Backend, Resume, Sink
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.search import Prepared, run_method
from colt_ray.core.tickets.trainer import FULL, TrainOutcome
from colt_ray.parallel.actors import BatchedShardTrainer, LocalPool, RayPool, ShardTrainer
from colt_ray.parallel.evaluation import EvalScheduler
from colt_ray.parallel.resources import (
    DEFAULT_RESTARTS,
    cpus_needed,
    has_evaluator,
    shard_groups,
    shard_resources,
)


def evaluator_fits(cfg: RunConfig) -> bool:
    """Whether the connected cluster has CPUs for every trainer of the run, the evaluator included."""
    return float(ray.cluster_resources().get("CPU", 0)) >= cpus_needed(cfg)


class Coordinator:
    """One run: k shard trainers (COLT) plus an evaluator, or one full-data trainer (IMP, jackpot).

    ``cfg`` is the config the trainers get (resources already fitted to the cluster). ``use_ray=False`` keeps
    every trainer in this process (tests). ``placement_group`` None means the current one (a Tune trial's),
    if any: bundle 0 is the trial's own, then one bundle per shard, then the evaluator's.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        prepared: Optional[Prepared] = None,
        use_ray: bool = True,
        trainer_cls: type = ShardTrainer,
        restarts: int = DEFAULT_RESTARTS,
        placement_group: Optional[PlacementGroup] = None,
        echo: Callable[[str], None] = stderr_line,
        name: Optional[str] = None,
        first_bundle: int = 1,
    ):
        torch.set_num_threads(cfg.resources.threads)
        self.cfg = cfg
        pg = placement_group if placement_group is not None else (get_current_placement_group() if use_ray else None)
        opts: dict[str, Any] = {"resources": shard_resources(cfg, restarts), "placement_group": pg}
        if use_ray:
            opts["name"] = name or cfg.run_id()  # actors <run_id>/shard-<i> in the Ray dashboard
        pool = RayPool if use_ray else LocalPool
        k = cfg.num_shards if cfg.method.uses_shards else 0
        self.groups = shard_groups(cfg) if k else []
        self.shards: Any = None
        if k and cfg.resources.shards_per_actor > 1:  # each actor trains M shards stacked (docs/batched.md)
            group_opts = {**opts, "resources": shard_resources(cfg, restarts, cfg.resources.shards_per_actor)}
            self.shards = pool(cfg, self.groups, BatchedShardTrainer, first_bundle=first_bundle, **group_opts)
        elif k:
            self.shards = pool(cfg, range(k), trainer_cls, first_bundle=first_bundle, **opts)
        self.full: Any = None
        evaluator_bundle = first_bundle + len(self.groups)
        if k and has_evaluator(cfg) and use_ray and not self._evaluator_has_cpus(cfg, pg, evaluator_bundle):
            # a cluster that holds the k shards but not one more trainer: the evaluator shares their CPUs
            # (it only runs beside them), rather than waiting forever for a CPU of its own
            opts["resources"] = dataclasses.replace(opts["resources"], num_cpus=0.0)
            if pg is not None and len(pg.bundle_specs) <= evaluator_bundle:  # a group without its bundle
                opts["placement_group"] = None
            elif pg is None:
                echo(
                    f"colt-ray: the Ray cluster has no CPU left for the ticket evaluator beside {k} shards; "
                    "it shares their CPUs"
                )
        if not k or has_evaluator(cfg):
            self.full = pool(cfg, [FULL], trainer_cls, first_bundle=evaluator_bundle, **opts)
        self.owned_group: Optional[PlacementGroup] = None  # a group made for this run, removed at close
        self.prepared: Optional[Prepared] = None
        self.scheduler: Optional[EvalScheduler] = None
        self._puts: dict[int, tuple[dict, Any]] = {}
        if prepared is not None:
            self.attach(prepared)

    def _evaluator_has_cpus(self, cfg: RunConfig, pg: Optional[PlacementGroup], bundle: int) -> bool:
        """Whether the evaluator gets CPUs of its own: its placement-group bundle exists and holds them, or,
        outside a group, the cluster has them beside the shards."""
        if pg is None:
            return evaluator_fits(cfg)
        specs = pg.bundle_specs
        return len(specs) > bundle and specs[bundle].get("CPU", 0.0) >= cfg.resources.cpus_per_shard

    @property
    def pools(self) -> list[Any]:
        return [p for p in (self.shards, self.full) if p is not None]

    def attach(self, prepared: Prepared) -> Coordinator:
        """Put the run's data and theta_0 in the object store, once; every later call passes the references."""
        self.prepared = prepared
        any_pool = self.pools[0]
        self.data = any_pool.put(bundle_arrays(prepared.bundle))
        self.theta0 = any_pool.put(prepared.ctx.theta0)
        if isinstance(self.full, RayPool):  # COLT's evaluations, or IMP's tweaked retrainings
            self.scheduler = EvalScheduler(self.full, self.shards, self.data)
        return self

    # ---- the callables of the ticket methods ------------------------------------------------------
    def train_shards(self, theta: dict, mask: Mask, cycle: int, stop: Any = None) -> Optional[list[TrainOutcome]]:
        """Every shard trainer from ``theta`` under ``mask``, each pruning its own proposal."""
        shards = self.prepared.shards
        if self.cfg.resources.shards_per_actor > 1:
            data = [[self.data, [shards[i] for i in group]] for group in self.groups]
            outs = self.shards.run(data, self._ref(theta), mask.to_numpy(), cycle, True, 0, stop)
            return None if outs is None else [o for group in outs for o in group]
        data = [[self.data, s] for s in shards]
        return self.shards.run(data, self._ref(theta), mask.to_numpy(), cycle, True, 0, stop)

    def train_full(self, theta: dict, mask: Mask, cycle: int, prune_next: bool, capture_step: int) -> TrainOutcome:
        """A full-data training on the full-data trainer actor (IMP's levels, a jackpot)."""
        return self.full.run([[self.data, None]], self._ref(theta), mask.to_numpy(), cycle, prune_next, capture_step)[0]

    def evaluate(self, theta: dict, mask: Mask, cycle: int) -> Any:
        """Start a ticket retraining of ``cycle`` (COLT's evaluation, through the scheduler; IMP's tweaked
        retraining, on its full-data trainer); picked up later."""
        if self.scheduler is not None:
            return self.scheduler.submit(self._ref(theta), mask.to_numpy(), cycle)
        return self.full.submit([self.data, None], self._ref(theta), mask.to_numpy(), cycle)

    def chain_done(self) -> None:
        if self.scheduler is not None:
            self.scheduler.chain_done()

    def _ref(self, theta: dict) -> Any:
        """The object-store reference of a rewind point, put once (theta_0, or IMP's theta_k every level)."""
        if theta is self.prepared.ctx.theta0:
            return self.theta0
        if id(theta) not in self._puts:
            self._puts[id(theta)] = (theta, self.pools[0].put(theta))  # theta kept alive: its id stays unique
        return self._puts[id(theta)][1]

    def backend(self) -> Backend:
        colt = self.shards is not None
        return Backend(
            self.train_shards if colt else None,
            None if colt else self.train_full,
            self.evaluate if (colt or self.cfg.retrains_apart) and self.full is not None else None,
            self.chain_done if colt else None,
        )

    # ---- driving a run --------------------------------------------------------------------------------
    def run(self, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
        """Run the configured method to its end; ``sink`` gets each cycle's record as it finishes."""
        return run_method(self.prepared, self.backend(), sink, resume)

    def close(self) -> None:
        """Stop the trainer actors (and remove the placement group made for them, if any)."""
        for pool in self.pools:
            pool.close()
        if self.owned_group is not None:
            remove_placement_group(self.owned_group)
            self.owned_group = None

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
