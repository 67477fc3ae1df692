"""COLT's ticket evaluations on Ray: the scheduler that keeps them beside, never in front of, the mask chain."""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import ray

from colt_ray.core.tickets.teacher import charge
from colt_ray.parallel.actors import POLL_SECONDS, MaskRef, RayPool


class EvalScheduler:
    """COLT's ticket evaluations on Ray, one at a time per idle actor: the evaluator actor always, and the
    shard actors too once the mask chain is over (``chain_done``), so an evaluation never delays a shard
    training and no core idles at the end of a run. Each evaluation is a pure function of (theta, mask,
    cycle, seed): whichever actor runs it, its metrics are the same."""

    def __init__(self, evaluator: RayPool, shards: Optional[RayPool], data_ref: Any):
        """``data_ref``: the full set, which every evaluation retrains on (a shard actor fetches it only when
        it takes its first evaluation, after the mask chain)."""
        self.data, self.evaluator, self.shards = data_ref, evaluator, shards
        self.idle: list[tuple[RayPool, int]] = [(evaluator, 0)]
        self.queue: deque = deque()
        self.running: dict[Any, tuple[RayPool, int, int]] = {}  # future -> (pool, position, cycle)
        self.results: dict[int, Any] = {}  # cycle -> metrics, or the exception its evaluation raised

    def submit(self, theta: Any, mask: MaskRef, cycle: int, teacher: Any = None) -> SchedPending:
        """Queue the evaluation of ``cycle``'s ticket (``mask``: the packed mask's reference, already put;
        ``teacher``: the reference of the run's distillation teacher, for a distilled evaluation)."""
        self.evaluator.submitted.append(cycle)
        self.queue.append((cycle, theta, mask, teacher))
        self.pump()
        return SchedPending(self, cycle)

    def chain_done(self) -> None:
        """The mask chain is over: the shard actors take evaluations too."""
        if self.shards is not None:
            self.idle += [(self.shards, i) for i in range(len(self.shards.actors))]
            self.shards = None
            self.pump()

    def pump(self, timeout: float = 0.0) -> None:
        """Collect the evaluations that have finished (waiting up to ``timeout``), then start queued ones."""
        if self.running:
            ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
            for future in ready:
                pool, position, cycle = self.running.pop(future)
                try:
                    self.results[cycle] = pool.get(position, future, f"evaluating cycle {cycle}")
                except BaseException as exc:  # noqa: BLE001 - raised by result()
                    self.results[cycle] = exc
                self.idle.append((pool, position))
        while self.queue and self.idle:
            pool, position = self.idle.pop(0)
            cycle, theta, mask_ref, teacher = self.queue.popleft()
            future = pool.actors[position].evaluate.remote([self.data, None], theta, mask_ref, cycle, teacher)
            self.running[future] = (pool, position, cycle)

    def result(self, cycle: int) -> dict:
        while cycle not in self.results:
            self.pump(timeout=POLL_SECONDS)
            for pool, position, running in list(self.running.values()):
                pool.check_alive([position], f"evaluating cycle {running}")
        outcome = self.results[cycle]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class SchedPending:
    """One ticket evaluation handed to the ``EvalScheduler`` (the ``Pending`` of the core's COLT loop)."""

    def __init__(self, scheduler: EvalScheduler, cycle: int):
        self.scheduler, self.cycle = scheduler, cycle

    def done(self) -> bool:
        self.scheduler.pump()
        return self.cycle in self.scheduler.results

    def result(self) -> dict:
        return self.scheduler.result(self.cycle)


class TeacherShare:
    """COLT's distillation teacher on Ray: trained once per run, by the evaluator actor, when the first
    distilled (sparse) evaluation is submitted; its weights stay in the object store and every evaluating actor
    gets their reference (a shard actor taking evaluations after the mask chain included), so no actor trains
    one of its own. Its cost goes to the row of that first evaluation, as the local backend charges it."""

    def __init__(self, evaluator: RayPool, data_ref: Any):
        self.evaluator, self.data = evaluator, data_ref
        self.state: Any = None  # the reference of the teacher's weights, once asked for
        self.cost: Any = None
        self.charged_cycle: Optional[int] = None

    def for_cycle(self, cycle: int) -> Any:
        """The teacher's reference for the distilled evaluation of ``cycle`` (trained at the first call)."""
        if self.state is None:
            actor = self.evaluator.actors[0]
            self.state, self.cost = actor.teacher.options(num_returns=2).remote([self.data, None])
            self.charged_cycle = cycle
        return self.state

    def charged(self, pending: SchedPending, cycle: int) -> Any:
        """``pending``, with the teacher's cost added to its metrics if ``cycle`` is the one that needed it."""
        return Charged(pending, self) if cycle == self.charged_cycle else pending


class Charged:
    """The evaluation that needed the teacher first: its metrics carry the teacher's training (``charge``)."""

    def __init__(self, pending: SchedPending, share: TeacherShare):
        self.pending, self.share = pending, share

    def done(self) -> bool:
        return self.pending.done()

    def result(self) -> dict:
        metrics = self.pending.result()
        return charge(metrics, self.share.evaluator.get(0, self.share.cost, "training the distillation teacher"))
