"""``Coordinator``: holds one ticket search on Ray. A plain class, used two ways:

* in-process (``Coordinator(cfg, prepared=p).run(sink)``): inside a Tune trial (its actors land in the
  trial's placement group) or a driver that already holds the data;
* as an actor (``create_actor(Coordinator, ...)`` then ``stream``): the CLI's ``--backend ray``; each cycle's
  record is yielded back to the driver, which writes it and prints the progress line.

The method loop is the core's (``run_method``): the coordinator only supplies ``train_shards`` and
``train_full``, so the masks are intersected and the records built exactly as in the local backend.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any, Iterator, Optional

import torch
from ray.util.placement_group import PlacementGroup, get_current_placement_group

from colt_ray.core.config import RunConfig
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.methods import Resume, Sink
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.search import Prepared, prepare, run_method
from colt_ray.core.tickets.trainer import FULL, TicketTrainer, TrainOutcome
from colt_ray.parallel.actors import LocalPool, RayPool, ShardTrainer
from colt_ray.parallel.resources import DEFAULT_RESTARTS, shard_resources, uses_shards

_DONE = object()


class Coordinator:
    """One run: theta_0 put once in the object store, one trainer per shard (COLT) or the full-data trainer
    (IMP, jackpot), the ticket evaluation here, one ``CycleRecord`` per cycle to the sink.

    ``cfg`` is the config the trainers get (resources already fitted to the cluster); ``prepared`` is the
    validated run (built here with ``prepare(cfg, run_id)`` when None, e.g. inside an actor, so the data are
    loaded where they are used rather than shipped). ``use_ray=False`` keeps every trainer in this process.
    ``placement_group`` None means the current one (a Tune trial's), if any.
    """

    def __init__(self, cfg: RunConfig, run_id: Optional[str] = None, *, prepared: Optional[Prepared] = None,
                 use_ray: bool = True, trainer_cls: type = ShardTrainer, restarts: int = DEFAULT_RESTARTS,
                 placement_group: Optional[PlacementGroup] = None):
        torch.set_num_threads(cfg.resources.threads)
        self.cfg = cfg
        indices = list(range(cfg.num_shards)) if uses_shards(cfg) else [FULL]
        if use_ray:  # the actors start (and load their shards) while this process prepares the run
            pg = placement_group if placement_group is not None else get_current_placement_group()
            self.pool: Any = RayPool(cfg, indices, shard_resources(cfg, restarts), trainer_cls, pg)
        else:
            self.pool = LocalPool(cfg, indices, trainer_cls)
        try:
            self.prepared = dataclasses.replace(prepared if prepared is not None else prepare(cfg, run_id), cfg=cfg)
        except BaseException:
            self.pool.close()
            raise
        self.theta0 = self.pool.put(self.prepared.ctx.theta0)  # once per run; every call passes this reference
        self._full: Optional[TicketTrainer] = None

    # ---- the two callables of the ticket methods ------------------------------------------------------
    def train_shards(self, theta: dict, mask: Mask, cycle: int) -> list[TrainOutcome]:
        """Every shard trainer from ``theta`` under ``mask``, each pruning its own proposal."""
        return self.pool.run(self._ref(theta), mask.to_numpy(), cycle, True, 0)

    def train_full(self, theta: dict, mask: Mask, cycle: int, prune_next: bool, capture_step: int) -> TrainOutcome:
        """A full-data training: on the trainer actor for IMP (and jackpot), in this process for COLT's ticket
        evaluation (which never runs while the shard trainers do)."""
        if not uses_shards(self.cfg):
            return self.pool.run(self._ref(theta), mask.to_numpy(), cycle, prune_next, capture_step)[0]
        if self._full is None:
            self._full = TicketTrainer.for_full(self.cfg, self.prepared.bundle)
        return self._full.run(theta, mask, cycle, prune_next, capture_step)

    def _ref(self, theta: dict) -> Any:
        return self.theta0 if theta is self.prepared.ctx.theta0 else self.pool.put(theta)

    # ---- driving a run --------------------------------------------------------------------------------
    def run(self, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
        """Run the configured method to its end; ``sink`` gets each cycle's record as it finishes."""
        return run_method(self.prepared, self.train_shards, self.train_full, sink, resume)

    def stream(self, resume: Optional[Resume] = None) -> Iterator[CycleRecord]:
        """``run`` as a generator of records (a Ray streaming generator when this is an actor).

        The method loop runs in a thread and hands each record over a queue, so a record reaches the
        driver as soon as its cycle ends; an error of the loop is raised here, after the records before it.
        """
        records: queue.Queue = queue.Queue()

        def body() -> None:
            try:
                self.run(records.put, resume)
                records.put(_DONE)
            except BaseException as exc:  # handed to the consumer, which raises it
                records.put(exc)

        worker = threading.Thread(target=body, name="colt-ray-coordinator", daemon=True)
        worker.start()
        while True:
            item = records.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        worker.join()

    def run_id(self) -> str:
        return self.prepared.run_id

    def close(self) -> None:
        """Stop the trainer actors (an actor coordinator's are also stopped when it dies: it owns them)."""
        self.pool.close()

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
