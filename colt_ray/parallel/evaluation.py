"""COLT's ticket evaluations on Ray: the scheduler that keeps them beside, never in front of, the mask chain."""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import ray

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

    def submit(self, theta: Any, mask: MaskRef, cycle: int) -> SchedPending:
        """Queue the evaluation of ``cycle``'s ticket (``mask``: the packed mask's reference, already put)."""
        self.evaluator.submitted.append(cycle)
        self.queue.append((cycle, theta, mask))
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
            cycle, theta, mask_ref = self.queue.popleft()
            future = pool.actors[position].evaluate.remote([self.data, None], theta, mask_ref, cycle)
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
