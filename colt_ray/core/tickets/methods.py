"""The ticket methods: IMP (Frankle & Carbin; open_lth), COLT (Hossain et al.; ismail31416/COLT) and lottery
jackpots (Zhang, Lin et al.; zyxxmu/lottery-jackpots; only ``train_full``, see ``jackpot.py``).

All are loops over pure core functions. The work of training is passed in as callables, so a parallel
backend replaces the sequential one without touching the method:

* ``train_shards(theta, mask, cycle) -> list[TrainOutcome]``: train every shard model from ``theta`` under
  ``mask`` and prune each (COLT step 4a for the next cycle);
* ``train_full(theta, mask, cycle, prune_next, capture_step) -> TrainOutcome``: one full-data training
  (IMP's levels, COLT's ticket evaluation, step 6; a jackpot's pre-training and, at cycle >= 1, its search).

``sink(record)`` receives one ``CycleRecord`` per finished cycle. ``resume`` continues after a completed
cycle (a retried sweep trial), so a cycle whose record was emitted is never recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from colt_ray.core.config import RunConfig
from colt_ray.core.pruning import Mask, vote
from colt_ray.core.registry import Registry
from colt_ray.core.tickets.records import CycleRecord, layer_rows, shard_row, ticket_row
from colt_ray.core.tickets.trainer import TrainOutcome

State = dict[str, np.ndarray]
TrainShards = Callable[[State, Mask, int], Sequence[TrainOutcome]]
TrainFull = Callable[[State, Mask, int, bool, int], TrainOutcome]
Sink = Callable[[CycleRecord], None]


@dataclass
class Resume:
    """Where to continue: the last completed cycle, its ticket mask, the shard proposals it produced and
    the rewind point in use."""

    cycle: int
    mask: Mask
    proposals: list[Mask]
    theta: State


@dataclass
class Context:
    """What a method needs besides the callables: the run, theta_0, and the prunable tensors."""

    cfg: RunConfig
    run_id: str
    theta0: State
    groups: dict[str, str]  # prunable tensor name -> group (conv/linear/output/batchnorm)

    def ones(self) -> Mask:
        return Mask.ones_like({n: self.theta0[n] for n in self.groups})

    def finished(self, cycle: int, mask: Mask, previous: Optional[Mask]) -> bool:
        """Stop at the cycle cap, at the target sparsity, or when a cycle could prune nothing more."""
        cap, target = self.cfg.max_cycles, self.cfg.ticket.target_sparsity
        if cap is not None and cycle >= cap:
            return True
        if target is not None and mask.sparsity() >= target:
            return True
        return previous is not None and previous.kept() == mask.kept()


METHODS: Registry[Callable[..., CycleRecord]] = Registry("method")


@METHODS.register("colt")
def run_colt(ctx: Context, train_shards: TrainShards, train_full: Optional[TrainFull], sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """COLT (ALGORITHMS.md section 2): k shard models from theta_0, AND of their pruned masks, rewind, repeat."""
    cfg, theta0 = ctx.cfg, ctx.theta0
    cycle, mask, proposals, previous = 0, ctx.ones(), [], None
    if resume is not None:
        previous = resume.mask
        cycle, mask, proposals = resume.cycle + 1, vote(resume.proposals, cfg.vote), resume.proposals
    while True:
        if cycle > 0 and previous is not None:
            mask.check_subset_of(previous)
        ticket = train_full(theta0, mask, cycle, False, 0).metrics if (train_full and cfg.ticket.eval_tickets) else None
        done = ctx.finished(cycle, mask, previous)
        outs = [] if done else list(train_shards(theta0, mask, cycle))
        rows = [ticket_row(ctx.run_id, cycle, mask, ctx.groups, ticket, proposals)]
        rows += [shard_row(ctx.run_id, cycle, o.index, mask, ctx.groups, o.metrics) for o in outs]
        next_proposals = [Mask.from_numpy(o.mask) for o in outs]
        record = CycleRecord(ctx.run_id, cycle, mask, theta0, rows, layer_rows(ctx.run_id, cycle, mask, ctx.groups, proposals), next_proposals, done)
        sink(record)
        if done:
            return record
        previous, proposals = mask, next_proposals
        mask, cycle = vote(proposals, cfg.vote), cycle + 1


@METHODS.register("imp")
def run_imp(ctx: Context, train_shards: Optional[TrainShards], train_full: TrainFull, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """IMP (ALGORITHMS.md section 1): train, prune p of the survivors, rewind to theta_0 (or theta_k), retrain."""
    cfg = ctx.cfg
    cycle, mask, theta, previous = 0, ctx.ones(), ctx.theta0, None
    if resume is not None:
        previous, theta = resume.mask, resume.theta
        cycle, mask = resume.cycle + 1, resume.proposals[0]
    while True:
        if previous is not None:
            mask.check_subset_of(previous)
        done = ctx.finished(cycle, mask, previous)
        capture = cfg.ticket.rewind_step if cycle == 0 else 0
        out = train_full(theta, mask, cycle, not done, capture)
        proposals = [] if done else [Mask.from_numpy(out.mask)]
        rows = [ticket_row(ctx.run_id, cycle, mask, ctx.groups, out.metrics, [])]
        record = CycleRecord(ctx.run_id, cycle, mask, theta, rows, layer_rows(ctx.run_id, cycle, mask, ctx.groups, []), proposals, done)
        sink(record)
        if done:
            return record
        if out.captured is not None:
            theta = out.captured  # late rewinding: every later level starts from theta_k
        previous, mask, cycle = mask, proposals[0], cycle + 1


@METHODS.register("jackpot")
def run_jackpot(ctx: Context, train_shards: Optional[TrainShards], train_full: TrainFull, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """Lottery jackpot (ALGORITHMS.md section 4), through ``train_full`` alone.

    Cycle 0: train the dense model from ``ctx.theta0`` (or, with a pre-trained file, only evaluate it) and
    propose its magnitude mask at the target sparsity; the record's theta is the pre-trained model. Cycle 1:
    search the jackpot from that mask on the frozen weights; its accuracy is that of the weights under the
    mask, with no weight training. ``resume`` (after cycle 0) starts at the search from its theta and proposal.
    """
    if resume is not None:
        theta, start = resume.theta, resume.proposals[0]
    else:
        dense = ctx.ones()
        out = train_full(ctx.theta0, dense, 0, True, 0)
        theta, start = out.captured, Mask.from_numpy(out.mask)
        rows = [ticket_row(ctx.run_id, 0, dense, ctx.groups, out.metrics, [])]
        layers = layer_rows(ctx.run_id, 0, dense, ctx.groups, [])
        sink(CycleRecord(ctx.run_id, 0, dense, theta, rows, layers, [start], False))
    out = train_full(theta, start, 1, False, 0)
    mask = Mask.from_numpy(out.mask)
    rows = [ticket_row(ctx.run_id, 1, mask, ctx.groups, out.metrics, [])]
    record = CycleRecord(ctx.run_id, 1, mask, theta, rows, layer_rows(ctx.run_id, 1, mask, ctx.groups, []), [], True)
    sink(record)
    return record
