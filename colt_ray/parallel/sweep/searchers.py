"""The sweep's Tune searchers around Optuna (imports Ray; imported by ``tuner`` only when a sweep runs).

* :class:`OptunaPruning` - Ray's ``OptunaSearch``, except that a trial stopped before its search finished
  (by ASHA) is told to Optuna as PRUNED, not as a COMPLETE result with the metrics of the cycle it reached.
  Ray 2.x tells a stopped trial's last result as complete (``TuneController.stop_trial`` passes it to
  ``on_trial_complete``, and ``OptunaSearch`` tells any result it gets as COMPLETE); a truncated trial's
  accuracy and sparsity would then steer TPE and sit in NSGA-II's population as if finished. With an Optuna
  ``storage`` (a sweep on a local disk: a journal file, ``tuner.optuna_storage``) the study lives there,
  appended to at each ask and tell, and the searcher state Tune saves with every experiment snapshot is only
  the sampler and the Tune trial id -> Optuna trial of the trials still running (``OptunaSearch.save`` would
  pickle every trial it ever asked for).
* :class:`NSGAII` - Optuna's NSGA-II sampler, made picklable again: Optuna 5.1's GA samplers hold a
  ``threading.Lock`` (``optuna/samplers/_ga/_base.py``), and Tune pickles the searcher into the Tuner's state
  and every experiment snapshot (``TypeError: cannot pickle '_thread.lock' object`` otherwise).
* :class:`Limiter` - Ray's ``ConcurrencyLimiter``, passing on the completion of a trial rerun by ``--resume``
  (it errored before), which Ray's drops; :meth:`OptunaPruning._tell_rerun` adds its result to the study.
* :class:`Replicates` - each recipe the wrapped searcher suggests becomes one trial per (seed, method) of a
  ``compare:``/``seeds:`` sweep (``compare.trial_variants``); the searcher sees the recipe once and is told
  the outcome of the whole group (``compare.group_outcome``) when its last trial ends.
"""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any, Optional

import optuna
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from colt_ray.parallel.sweep.compare import group_outcome


class NSGAII(optuna.samplers.NSGAIISampler):
    """``NSGAIISampler`` that pickles: its lock is dropped from the pickled state and a new one made on load
    (a lock guards one process's threads; a copy restored elsewhere needs its own)."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


class Grid(optuna.samplers.GridSampler):
    """``GridSampler`` without its ``study.stop()`` after the last point: Tune asks and tells outside
    ``Study.optimize``, where ``stop`` raises, and the sweep's trial count (the grid's size, or fewer) ends it.
    Running trials' points are not handed out again (``_get_unvisited_grid_ids``), so concurrent trials never
    share a point."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


class OptunaPruning(OptunaSearch):
    """``OptunaSearch`` telling trials that end without ``search_done`` (stopped early) as PRUNED, reporting
    intermediate values at their cycle, and saving only what a resume needs when the study has a storage."""

    def _setup_study(self, mode: Any) -> None:
        # points_to_evaluate are enqueued into the study when it is made; a resume re-attaches to a study in
        # its storage that has them queued or tried already, and must not queue them a second time
        points = self._points_to_evaluate
        if points and self._storage is not None:
            import optuna

            if self._study_name in optuna.study.get_all_study_names(storage=self._storage):
                self._points_to_evaluate = []
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # the step is the cycle, not Tune's training_iteration: a trial restored from its own checkpoint file
        # restarts Tune's count at 1 but continues its cycles
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return
        step = int(result["cycle"])
        if trial_id not in self._ot_trials:  # a trial told before a resume, run again (see _tell_rerun)
            self.__dict__.setdefault("_rerun_steps", {}).setdefault(trial_id, {})[step] = result[self.metric]
            return
        ot_trial = self._ot_trials[trial_id]
        if step not in ot_trial._cached_frozen_trial.intermediate_values:  # else a cycle redone after a resume
            ot_trial.report(result[self.metric], step)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if result and not error and not result.get("search_done"):
            result = None  # OptunaSearch tells a trial without a result as PRUNED (FAIL with error=True)
        if trial_id not in self._ot_trials and trial_id not in self._completed_trials:
            self._tell_rerun(trial_id, result, error)
            return
        ot_trial = self._ot_trials.get(trial_id)
        if self._storage is not None and ot_trial is not None and _finished(ot_trial):
            # told before the driver was killed, after its last snapshot: the study has it already
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def _tell_rerun(self, trial_id: str, result: Optional[dict], error: bool) -> None:
        """A trial told before a resume (it errored) and run again by ``--resume``: the study keeps the failed
        attempt, and the rerun's result becomes a new trial with the same settings (Optuna cannot tell a
        finished trial again)."""
        import optuna

        self._completed_trials.add(trial_id)
        steps = self.__dict__.get("_rerun_steps", {}).pop(trial_id, {})
        result = result or {}  # Tune passes it flattened: config/<setting> keys
        config = result.get("config") or {k[len("config/") :]: v for k, v in result.items() if k.startswith("config/")}
        if error or not result or not all(k in config for k in self._space):
            return  # failed again, stopped early, or no settings to add it with: the failed attempt stands
        values = [result.get(m) for m in self.metric] if isinstance(self.metric, list) else [result.get(self.metric)]
        if any(v is None for v in values):
            return
        self._ot_study.add_trial(
            optuna.trial.create_trial(
                params={k: config[k] for k in self._space},
                distributions=dict(self._space),
                values=values,
                intermediate_values=steps,  # its value at each cycle, as on_trial_result reports them
                user_attrs={"tune_trial_id": trial_id, "rerun_after_resume": True},
            )
        )

    def save(self, checkpoint_path: str) -> None:
        if self._storage is None:  # an in-memory study: it is the state
            return super().save(checkpoint_path)
        state = {k: v for k, v in self.__dict__.items() if k not in ("_ot_study", "_ot_trials", "_storage")}
        state["_completed_trials"] = set()  # finished trials are in the study; Tune does not report them again
        state["_running"] = {t: o._trial_id for t, o in self._ot_trials.items() if t not in self._completed_trials}
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        if "_running" not in state:
            return super().restore(checkpoint_path)
        import optuna

        running = state.pop("_running")
        self.__dict__.update(state)
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._sampler)
        # Trial(study, id) takes Optuna's storage id of the trial (``_trial_id``), not its number
        self._ot_trials = {t: optuna.trial.Trial(self._ot_study, storage_id) for t, storage_id in running.items()}
        abandon_orphans(self._ot_study, set(running.values()))


def _finished(ot_trial: Any) -> bool:
    return ot_trial.study._storage.get_trial(ot_trial._trial_id).state.is_finished()


def abandon_orphans(study: Any, running: set[int]) -> list[int]:
    """Tell FAIL every trial of ``study`` still RUNNING that the restored searcher does not know (asked after the
    driver's last snapshot, so Tune does not know it either: ``driver.drop_orphans`` removes its results);
    returns their storage ids."""
    import optuna

    lost = [
        t._trial_id
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if t._trial_id not in running
    ]
    for trial_id in lost:
        study._storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    return lost


class Limiter(ConcurrencyLimiter):
    """Ray's ``ConcurrencyLimiter``, except that the completion of a trial it does not hold as live (told
    before a resume, and run again by it: an errored trial) reaches the searcher instead of being dropped."""

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id not in self.live_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
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
