"""``Coordinator``: holds one ticket search on Ray, in the driver's process (the CLI, or a Tune trial).

Its trainer actors are created first (their processes start and import torch while the driver loads the
data), then ``attach`` puts in the object store, once per run: each shard's rows (all a shard actor ever
receives), theta_0, and the full set for the full-data trainer (unless the caller, a sweep, already holds it
there); every call passes those references. Each cycle's mask is put once, packed at one bit per weight,
and shared by the k shard trainings and the ticket's evaluation. For COLT, k shard actors form the mask
chain and one evaluator actor trains the tickets on the full data beside it (README, "Backends and speed"):
the core's loop submits each evaluation and never waits for it before the next cycle's shards. IMP and
jackpots have one full-data trainer actor.

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
from colt_ray.core.data import bundle_arrays, shard_bundle
from colt_ray.core.errors import stderr_line
from colt_ray.core.pruning import Mask, pack_mask, unpack_mask
from colt_ray.core.tickets.methods import Backend, Resume, Sink
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.search import Prepared, make_full_trainer, run_method
from colt_ray.core.tickets.teacher import dense
from colt_ray.core.tickets.trainer import FULL, TrainOutcome
from colt_ray.core.tweaks import uses
from colt_ray.parallel.actors import BatchedShardTrainer, LocalPool, RayPool, ShardTrainer
from colt_ray.parallel.evaluation import EvalScheduler, TeacherShare
from colt_ray.parallel.resources import (
    DEFAULT_RESTARTS,
    cpus_needed,
    has_evaluator,
    shard_groups,
    shard_resources,
)


def unpacked_outcome(outcome: TrainOutcome) -> TrainOutcome:
    """A trainer's outcome with its proposal, which travelled packed, back as numpy bool arrays."""
    if outcome.mask is None:
        return outcome
    return dataclasses.replace(outcome, mask=unpack_mask(outcome.mask))


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
        self.teacher: Optional[TeacherShare] = None  # COLT with distillation on Ray: the run's one teacher
        self._puts: dict[int, tuple[dict, Any]] = {}
        self._mask: Optional[tuple[Mask, Any]] = None  # the mask put last, and its reference
        self.data: Any = None  # the full set (None: no trainer of the run needs it)
        self.shard_data: list[list] = []  # per shard actor: [reference to its rows, None]
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

    def attach(self, prepared: Prepared, data: Any = None) -> Coordinator:
        """Put the run's data and theta_0 in the object store, once; every later call passes the references.
        ``data``: a reference to ``bundle_arrays(prepared.bundle)`` already in the object store (a sweep's
        dataset, put once for all its trials), used instead of a put of the full set."""
        self.prepared = prepared
        any_pool = self.pools[0]
        if self.full is not None:  # only the full-data trainer and the evaluations need the whole set
            self.data = data if data is not None else any_pool.put(bundle_arrays(prepared.bundle))
        if self.shards is not None:
            self.shard_data = [[any_pool.put(self._rows(group)), None] for group in self._shard_groups()]
        self.theta0 = any_pool.put(prepared.ctx.theta0)
        if isinstance(self.full, RayPool):  # COLT's evaluations, or IMP's tweaked retrainings
            self.scheduler = EvalScheduler(self.full, self.shards, self.data)
            if self.shards is not None and uses(self.cfg, "distill"):  # several actors may evaluate: one teacher
                self.teacher = TeacherShare(self.full, self.data)
        return self

    def _shard_groups(self) -> list[Any]:
        """The shards of each shard actor: one index each, or a tuple of them (stacked shards)."""
        return self.groups if self.cfg.resources.shards_per_actor > 1 else list(range(len(self.prepared.shards)))

    def _rows(self, group: Any) -> Any:
        """What a shard actor receives: its shard's rows as arrays (a list of them for stacked shards)."""
        bundle, shards = self.prepared.bundle, self.prepared.shards
        if isinstance(group, tuple):
            return [bundle_arrays(shard_bundle(bundle, shards[i])) for i in group]
        return bundle_arrays(shard_bundle(bundle, shards[group]))

    # ---- the callables of the ticket methods ------------------------------------------------------
    def train_shards(self, theta: dict, mask: Mask, cycle: int, stop: Any = None) -> Optional[list[TrainOutcome]]:
        """Every shard trainer from ``theta`` under ``mask``, each pruning its own proposal."""
        outs = self.shards.run(self.shard_data, self._ref(theta), self._mask_ref(mask), cycle, True, 0, stop)
        if outs is None:
            return None
        if self.cfg.resources.shards_per_actor > 1:
            outs = [o for group in outs for o in group]
        return [unpacked_outcome(o) for o in outs]

    def train_full(self, theta: dict, mask: Mask, cycle: int, prune_next: bool, capture_step: int) -> TrainOutcome:
        """A full-data training on the full-data trainer actor (IMP's levels, a jackpot)."""
        ref, mask_ref = self._ref(theta), self._mask_ref(mask)
        return unpacked_outcome(self.full.run([[self.data, None]], ref, mask_ref, cycle, prune_next, capture_step)[0])

    def evaluate(self, theta: dict, mask: Mask, cycle: int) -> Any:
        """Start a ticket retraining of ``cycle`` (COLT's evaluation, through the scheduler; IMP's tweaked
        retraining, on its full-data trainer); picked up later."""
        if self.scheduler is not None:
            # a dense ticket needs no teacher; IMP has no share: its one actor keeps its level 0 as the teacher
            share = self.teacher if not dense(mask) else None
            teacher = share.for_cycle(cycle) if share is not None else None
            pending = self.scheduler.submit(self._ref(theta), self._mask_ref(mask), cycle, teacher)
            return share.charged(pending, cycle) if share is not None else pending
        return self.full.submit([self.data, None], self._ref(theta), self._mask_ref(mask), cycle)

    def pretrain(self, theta: dict, steps: int) -> TrainOutcome:
        """COLT's pre-training to its rewind point theta_k, in this process on the full set it holds (once per
        run, before any shard trains: nothing runs beside it), on the CPU unless the trainers train on GPUs and
        this process has one (as the trainers, which never touch CUDA without a GPU share)."""
        cfg, res = self.cfg, self.cfg.resources
        gpu = res.gpus_per_shard > 0 and res.device != "cpu" and torch.cuda.is_available()
        cfg = cfg.replace(resources=dataclasses.replace(res, device="cuda" if gpu else "cpu"))
        return make_full_trainer(cfg, self.prepared.bundle).pretrain(theta, steps)

    def _mask_ref(self, mask: Mask) -> Any:
        """The object-store reference of ``mask`` packed at one bit per weight, put once: a cycle's evaluation
        and its k shard trainings (IMP: its level's training and retraining) get the same mask object."""
        if self._mask is None or self._mask[0] is not mask:
            self._mask = (mask, self.pools[0].put(pack_mask(mask)))
        return self._mask[1]

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
            self.pretrain if colt else None,
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
