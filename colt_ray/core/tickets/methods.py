"""The loops of the ticket methods: IMP (Frankle & Carbin; open_lth), COLT (Hossain et al.;
ismail31416/COLT) and lottery jackpots (Zhang, Lin et al.; zyxxmu/lottery-jackpots). What each does:
docs/algorithms.md; the facts other layers ask about a method: ``specs.METHODS``.

A loop is a function over pure core code. The work of training is passed in as callables, so a parallel
backend replaces the sequential one without touching the method:

* ``train_shards(theta, mask, cycle, stop=None) -> list[TrainOutcome] | None``: train every shard model from
  ``theta`` under ``mask`` and prune each (COLT step 4a for the next cycle). ``stop()`` says the run is over
  (an evaluation crossed ``max_acc_drop``): a backend that trains asynchronously may give up and return None;
* ``train_full(theta, mask, cycle, prune_next, capture_step) -> TrainOutcome``: one full-data training
  (IMP's levels, a jackpot's pre-training and, at cycle >= 1, its search);
* ``evaluate(theta, mask, cycle) -> Pending``: a ticket retraining on the full data, with the run's
  retraining tweaks: COLT's ticket evaluation (step 6), which never feeds the mask chain (a backend may run it
  beside the next cycles' shard trainings and hand its result over later), and IMP's per-level retraining
  when a tweak is on (the level's own training is then the plain mask search).

``sink(record)`` receives one ``CycleRecord`` per finished cycle, in cycle order, once its evaluation (if
any) has landed. ``resume`` continues after a completed cycle (a retried sweep trial), so a cycle whose
record was emitted is never recomputed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from colt_ray.core.config import RunConfig, eval_every
from colt_ray.core.pruning import Mask, vote
from colt_ray.core.tickets.records import CycleRecord, fill_ticket_metrics, layer_rows, shard_row, ticket_row
from colt_ray.core.tickets.trainer import TrainOutcome, charge_pretraining

State = dict[str, np.ndarray]
TrainShards = Callable[..., Optional[Sequence[TrainOutcome]]]
TrainFull = Callable[[State, Mask, int, bool, int], TrainOutcome]
Sink = Callable[[CycleRecord], None]


class Pending(Protocol):
    """A ticket evaluation under way: ``done()`` without waiting, ``result()`` waits for the metrics."""

    def done(self) -> bool: ...
    def result(self) -> dict: ...


Evaluate = Callable[[State, Mask, int], Pending]


class Finished:
    """An evaluation that ran at once (the local backend)."""

    def __init__(self, metrics: dict):
        self.metrics = metrics

    def done(self) -> bool:
        return True

    def result(self) -> dict:
        return self.metrics


@dataclass
class Resume:
    """Where to continue: the last completed cycle, its ticket mask, the shard proposals it produced, the
    rewind point in use, and the dense ticket's accuracy (the reference of ``max_acc_drop``)."""

    cycle: int
    mask: Mask
    proposals: list[Mask]
    theta: State
    dense_acc: Optional[float] = None


@dataclass
class Backend:
    """The callables a backend offers the loops (any may be None when the method does not use it)."""

    train_shards: Optional[TrainShards] = None
    train_full: Optional[TrainFull] = None
    evaluate: Optional[Evaluate] = None
    chain_done: Optional[Callable[[], None]] = None  # told when no shard training follows (COLT's last cycle)
    # COLT with rewind_step k: ``pretrain(theta_0, k)``, a full-data training of k steps whose ``captured`` is theta_k
    pretrain: Optional[Callable[[State, int], TrainOutcome]] = None


@dataclass
class Context:
    """What a method needs besides the callables: the run, theta_0, and the prunable tensors."""

    cfg: RunConfig
    run_id: str
    theta0: State
    groups: dict[str, str]  # prunable tensor name -> group (conv/linear/output/batchnorm)
    total_params: Optional[int] = None  # every parameter of the retrained ticket (skip paths included)
    weight_params: Optional[int] = None  # the weights of its Linear, Conv and BatchNorm layers (``sparsity_weights``)

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

    def record(
        self,
        cycle: int,
        mask: Mask,
        theta: State,
        metrics: Optional[dict],
        merged_from: Sequence[Mask],
        shards: Sequence[TrainOutcome],
        proposals: list[Mask],
        done: bool,
    ) -> CycleRecord:
        total, weights = self.total_params, self.weight_params
        rows = [ticket_row(self.run_id, cycle, mask, self.groups, metrics, merged_from, total, weights)]
        rows += [shard_row(self.run_id, cycle, o.index, mask, self.groups, o.metrics, total, weights) for o in shards]
        layers = layer_rows(self.run_id, cycle, mask, self.groups, merged_from)
        return CycleRecord(self.run_id, cycle, mask, theta, rows, layers, proposals, done)


def selection_acc(metrics: Optional[dict]) -> Optional[float]:
    """The accuracy the stop rule compares: validation when the run has a split, else test (best epoch)."""
    if not metrics:
        return None
    return metrics.get("val_acc_best") if metrics.get("val_acc_best") is not None else metrics.get("acc_best")


def exceeds_drop(limit: Optional[float], dense: Optional[float], acc: Optional[float]) -> bool:
    """Whether ``acc`` falls more than ``limit`` below ``dense`` (False when any of them is unknown)."""
    return limit is not None and dense is not None and acc is not None and dense - acc > limit


class DropRule:
    """``max_acc_drop``: the run is over once an evaluated ticket falls more than D below the dense one."""

    def __init__(self, cfg: RunConfig, dense_acc: Optional[float] = None):
        self.limit, self.dense, self.crossed_at = cfg.ticket.max_acc_drop, dense_acc, None

    def see(self, cycle: int, metrics: Optional[dict]) -> None:
        acc = selection_acc(metrics)
        if self.limit is None or acc is None or self.crossed_at is not None:
            return
        if cycle == 0:
            self.dense = acc
        elif self.would_cross(cycle, metrics):
            self.crossed_at = cycle

    def would_cross(self, cycle: int, metrics: Optional[dict]) -> bool:
        return cycle > 0 and exceeds_drop(self.limit, self.dense, selection_acc(metrics))

    @property
    def crossed(self) -> bool:
        return self.crossed_at is not None


def eval_due(cfg: RunConfig, cycle: int, done: bool) -> bool:
    """Whether the ticket of ``cycle`` is evaluated under ``cfg.ticket.eval_tickets`` (the last ticket is,
    except under ``none``; the dense one is whenever ``max_acc_drop`` needs its reference)."""
    policy = cfg.ticket.eval_tickets
    if policy == "none":
        return False
    if policy == "all" or done or (cycle == 0 and cfg.ticket.max_acc_drop is not None):
        return True
    n = eval_every(policy)
    return n is not None and cycle % n == 0


class HeldRecords:
    """COLT's records waiting for their ticket evaluations: emitted to the sink in cycle order as their
    evaluations land, through the drop rule; nothing after the cycle that crossed it is ever emitted."""

    def __init__(self, sink: Sink, rule: DropRule):
        self.sink, self.rule = sink, rule
        self.held: deque[tuple[CycleRecord, Optional[Pending]]] = deque()
        self.last: Optional[CycleRecord] = None

    def hold(self, record: CycleRecord, pending: Optional[Pending]) -> None:
        self.held.append((record, pending))

    def ends_run(self, cycle: int, pending: Optional[Pending]) -> bool:
        """Whether ``cycle``'s own evaluation, already landed with nothing held before it, crosses the rule."""
        landed = not self.held and pending is not None and pending.done()
        return landed and self.rule.would_cross(cycle, pending.result())

    def emit(self, wait: bool = False) -> bool:
        """Emit the held records whose evaluations have landed (all, if ``wait``); True once the run is over."""
        held, rule = self.held, self.rule
        while held and not rule.crossed and (wait or held[0][1] is None or held[0][1].done()):
            record, pending = held.popleft()
            if pending is not None:
                metrics = pending.result()
                fill_ticket_metrics(record, metrics)
                rule.see(record.cycle, metrics)
                record.done = record.done or rule.crossed
            self.sink(record)
            self.last = record
        return rule.crossed


def run_colt(ctx: Context, backend: Backend, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """COLT: k shard models from theta_0 (or theta_k), AND of their pruned masks, rewind, repeat.

    With ``rewind_step`` k, theta_k is a full-data pre-training of k steps from theta_0 (``backend.pretrain``,
    once per run, charged to cycle 0's shard rows); every shard and ticket training then starts from theta_k
    (``trainer.rewind_start``), and a resumed run keeps the theta_k of its checkpoint.

    The mask chain (train k shards -> AND -> next cycle) never waits for a ticket evaluation: each is
    submitted, and its cycle's record is held until it lands, then emitted in cycle order. Once an evaluation
    crosses ``max_acc_drop``, cycles after it are abandoned and their records never written.
    """
    cfg, theta, pre = ctx.cfg, ctx.theta0, None
    cycle, mask, proposals, previous = 0, ctx.ones(), [], None
    records = HeldRecords(sink, DropRule(cfg, resume.dense_acc if resume else None))
    if resume is not None:
        previous, theta = resume.mask, resume.theta  # theta_k after late rewinding: never trained again
        cycle, mask, proposals = resume.cycle + 1, vote(resume.proposals, cfg.vote), resume.proposals
    elif cfg.ticket.rewind_step > 0:
        pre = backend.pretrain(theta, cfg.ticket.rewind_step)
        theta = pre.captured
    while True:
        if cycle > 0 and previous is not None:
            mask.check_subset_of(previous)
        done = ctx.finished(cycle, mask, previous)
        if done and backend.chain_done:
            backend.chain_done()  # the shard trainers are free from now on
        pending = backend.evaluate(theta, mask, cycle) if (backend.evaluate and eval_due(cfg, cycle, done)) else None
        records.emit()
        done = done or records.ends_run(cycle, pending)  # a ticket that ends the run needs no shard training
        outs = [] if done else backend.train_shards(theta, mask, cycle, stop=records.emit)
        if outs is None or records.rule.crossed:  # this cycle started after the crossing: abandoned, never written
            break
        if pre is not None and cycle == 0:
            outs = charge_pretraining(outs, pre.metrics)
        next_proposals = [Mask.from_numpy(o.mask) for o in outs]
        records.hold(ctx.record(cycle, mask, theta, None, proposals, outs, next_proposals, done), pending)
        if records.emit() or done:
            break
        previous, proposals = mask, next_proposals
        mask, cycle = vote(proposals, cfg.vote), cycle + 1
    records.emit(wait=True)
    assert records.last is not None, "a COLT run emits at least one record"
    return records.last


def run_imp(ctx: Context, backend: Backend, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """IMP: train, prune p of the survivors, rewind to theta_0 (or theta_k), retrain.

    With a retraining tweak on, each level's training stays plain IMP (it finds the next mask) and the
    level's ticket (theta, mask) is retrained apart with the tweaks (``backend.evaluate``); the level's row
    reports that retraining's accuracy and the cost of both trainings.
    """
    cfg = ctx.cfg
    cycle, mask, theta, previous = 0, ctx.ones(), ctx.theta0, None
    rule = DropRule(cfg, resume.dense_acc if resume else None)
    retrain = backend.evaluate if cfg.retrains_apart else None
    if resume is not None:
        previous, theta = resume.mask, resume.theta
        cycle, mask = resume.cycle + 1, resume.proposals[0]
    while True:
        if previous is not None:
            mask.check_subset_of(previous)
        done = ctx.finished(cycle, mask, previous)
        capture = cfg.ticket.rewind_step if cycle == 0 else 0
        out = backend.train_full(theta, mask, cycle, not done, capture)
        metrics = out.metrics if retrain is None else retrained(out.metrics, retrain(theta, mask, cycle).result())
        rule.see(cycle, metrics)
        done = done or rule.crossed
        proposals = [] if done else [Mask.from_numpy(out.mask)]
        record = ctx.record(cycle, mask, theta, metrics, [], [], proposals, done)
        record.rewind = out.captured  # late rewinding: theta_k, the rewind point of every later level
        sink(record)
        if done:
            return record
        if out.captured is not None:
            theta = out.captured
        previous, mask, cycle = mask, proposals[0], cycle + 1


def retrained(search: dict, retraining: dict) -> dict:
    """A level's metrics when its ticket is retrained apart: the retraining's accuracies, both trainings' cost,
    and (``mask_sample_epochs``) the level training's own, which alone proposed the next level's mask: the
    cost of a later ticket counts it, not this level's retraining (``results.tables._search_compute``)."""
    cost = ("sample_epochs", "wall_seconds", "cpu_seconds")
    summed = {k: (search.get(k) or 0) + (retraining.get(k) or 0) for k in cost}
    return {**retraining, **summed, "mask_sample_epochs": search.get("sample_epochs") or 0}


def run_jackpot(ctx: Context, backend: Backend, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """Lottery jackpot: a mask searched by scores on frozen pre-trained weights, no weight training.

    Cycle 0: train the dense model from ``ctx.theta0`` (or, with a pre-trained file, only evaluate it) and
    propose its magnitude mask at the target sparsity; the record's theta is the pre-trained model. Cycle 1:
    search the jackpot from that mask on the frozen weights; its accuracy is that of the weights under the
    mask, with no weight training. ``resume`` (after cycle 0) starts at the search from its theta and proposal.
    """
    train_full = backend.train_full
    if resume is not None:
        theta, start = resume.theta, resume.proposals[0]
    else:
        dense = ctx.ones()
        out = train_full(ctx.theta0, dense, 0, True, 0)
        theta, start = out.captured, Mask.from_numpy(out.mask)
        sink(ctx.record(0, dense, theta, out.metrics, [], [], [start], False))
    out = train_full(theta, start, 1, False, 0)
    mask = Mask.from_numpy(out.mask)
    # the jackpot's ticket: the pre-trained weights with the BatchNorm statistics its search collected
    searched = out.captured if out.captured is not None else theta
    record = ctx.record(1, mask, searched, out.metrics, [], [], [], True)
    sink(record)
    return record
