"""A running sweep, seen from outside: ``trials.parquet`` rewritten as trials finish (and every ``every``
seconds while they report), and ``sweep_status.json`` beside it (the trials planned, the cluster's resources
and what the running trials hold, when it was written), both atomically on local disks and object stores
alike. :class:`LiveTable` is the Tune callback that writes them (imports Ray); ``colt-ray status`` reads them
(``colt_ray.parallel.sweep.status``, no Ray). The end of the sweep writes the final ``trials.parquet`` over
the live one (``driver.run_sweep``)."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from ray.tune import Callback

from colt_ray.parallel.sweep.spec import SweepSpec
from colt_ray.parallel.sweep.status import STATUS_FILE
from colt_ray.parallel.sweep.trials import mark_pareto, trial_row, write_trials
from colt_ray.results.writer import write_bytes_atomic

EVERY_SECONDS = 10.0  # while trials only report (no trial ends), the live files are rewritten at most this often


class LiveTable(Callback):
    """Rewrites the sweep's live ``trials.parquet`` and ``sweep_status.json`` in ``out`` whenever a trial
    ends, and at most every ``every`` seconds while trials report results."""

    def __init__(self, spec: SweepSpec, out: str, every: float = EVERY_SECONDS):
        self.spec, self.out, self.every = spec, out, every
        self.ended: dict[str, bool] = {}  # trial id -> True when it errored (after its retries)
        self.last = 0.0

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if time.monotonic() - self.last >= self.every:
            self.write(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = False
        self.write(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = True
        self.write(trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended.pop(trial.trial_id, None)  # a retried or resumed trial runs again

    def write(self, trials: list) -> None:
        rows = live_rows(self.spec, trials, self.ended)
        write_trials(self.out, rows)
        write_bytes_atomic(self.out, (STATUS_FILE,), json.dumps(status_record(self.spec, trials, self.ended)).encode())
        self.last = time.monotonic()


def live_rows(spec: SweepSpec, trials: list, ended: dict[str, bool]) -> list[dict[str, Any]]:
    """TRIALS rows of the trials that started: finished ones as at the end of the sweep, the others
    ``running`` with their last result (Pareto flags over the completed ones)."""
    rows = []
    for t in trials:
        metrics, errored = dict(t.last_result or {}), _errored(t, ended)
        if errored is None and not metrics:
            continue  # not started yet
        error = "the trial failed (see its Tune log)" if errored else None
        row = trial_row(spec, t.trial_id, dict(t.config or {}), metrics, error)
        if errored is None:
            row.update(status="running", stopped_early=False)
        rows.append(row)
    rows.sort(key=lambda r: r["trial_id"])
    mark_pareto(spec, rows)
    return rows


def _errored(trial: Any, ended: dict[str, bool]) -> Any:
    """True (errored) / False (ended otherwise) / None (not ended): what this callback saw, else Tune's status
    (a trial that ended before a resume is never reported to the restored callback again)."""
    if trial.trial_id in ended:
        return ended[trial.trial_id]
    return {"TERMINATED": False, "ERROR": True}.get(getattr(trial, "status", ""))


def status_record(spec: SweepSpec, trials: list, ended: dict[str, bool]) -> dict[str, Any]:
    """What ``colt-ray status`` needs beside the trials table: the plan, the time, and the resources."""
    import ray

    held: dict[str, float] = {}
    for t in trials:
        if _errored(t, ended) is not None or not t.last_result or getattr(t, "status", "") != "RUNNING":
            continue
        for key, amount in t.placement_group_factory.required_resources.items():
            held[key] = held.get(key, 0.0) + float(amount)
    cluster = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    return {
        "sweep": spec.name,
        "planned_trials": spec.trial_count,
        "objectives": [[o.metric, o.mode] for o in spec.objectives],
        "search": list(spec.search),
        "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "cluster": cluster,
        "held": {k: v for k, v in held.items() if k in ("CPU", "GPU")},
    }
