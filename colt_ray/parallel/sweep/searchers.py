"""The sweep's Tune searchers around Optuna (imports Ray; imported by ``tuner`` only when a sweep runs).

* :class:`OptunaPruning` - Ray's ``OptunaSearch``, except that a trial stopped before its search finished
  (by ASHA) is told to Optuna as PRUNED, not as a COMPLETE result with the metrics of the cycle it reached.
  Ray 2.x tells a stopped trial's last result as complete (``TuneController.stop_trial`` passes it to
  ``on_trial_complete``, and ``OptunaSearch`` tells any result it gets as COMPLETE); a truncated trial's
  accuracy and sparsity would then steer TPE and sit in NSGA-II's population as if finished.
* :class:`Replicates` - each recipe the wrapped searcher suggests becomes one trial per (seed, method) of a
  ``compare:``/``seeds:`` sweep (``compare.trial_variants``); the searcher sees the recipe once and is told
  the outcome of the whole group (``compare.group_outcome``) when its last trial ends.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from colt_ray.parallel.sweep.compare import group_outcome


class OptunaPruning(OptunaSearch):
    """``OptunaSearch`` telling trials that end without ``search_done`` (stopped early) as PRUNED."""

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if result and not error and not result.get("search_done"):
            result = None  # OptunaSearch tells a trial without a result as PRUNED (FAIL with error=True)
        super().on_trial_complete(trial_id, result=result, error=error)


class Replicates(Searcher):
    """Turns each suggestion of ``searcher`` into ``len(variants)`` trials: the sampled settings with each
    variant's settings on top. ``metrics``: the objectives averaged over a group for the searcher."""

    def __init__(self, searcher: Searcher, variants: list[dict[str, Any]], metrics: list[str]):
        self.searcher = searcher
        self.variants = [dict(v) for v in variants]
        self.metrics = list(metrics)
        self.groups: dict[str, list[str]] = {}  # the searcher's trial id (the group's first) -> the group's trials
        self.group_of: dict[str, str] = {}  # trial id -> its group's first trial id
        self.outcomes: dict[str, Optional[dict]] = {}  # trial id -> its last result (None: failed)
        self.open: Optional[tuple[str, dict]] = None  # the group being launched: first trial id, sampled settings
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def suggest(self, trial_id: str) -> Optional[dict]:
        if self.open is None or len(self.groups[self.open[0]]) == len(self.variants):
            sampled = self.searcher.suggest(trial_id)
            if sampled is None or sampled == Searcher.FINISHED:
                return sampled
            self.open = (trial_id, copy.deepcopy(sampled))
            self.groups[trial_id] = []
        first, sampled = self.open
        members = self.groups[first]
        variant = self.variants[len(members)]
        members.append(trial_id)
        self.group_of[trial_id] = first
        return {**copy.deepcopy(sampled), **variant}

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        first = self.group_of.get(trial_id)
        if first is None or trial_id in self.outcomes:
            return
        self.outcomes[trial_id] = None if error else dict(result or {})
        members = self.groups[first]
        if len(members) == len(self.variants) and all(m in self.outcomes for m in members):
            self.searcher.on_trial_complete(first, **group_outcome([self.outcomes[m] for m in members], self.metrics))

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def get_state(self) -> dict:
        state = self.__dict__.copy()
        del state["searcher"]
        return copy.deepcopy(state)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)
