"""After a sweep: one TRIALS row per trial (status, final metrics, objective, Pareto flag), and each run's
``runs`` row brought in line with how its trial ended (a trial stopped by ASHA cannot write its own).

A trial is ``completed`` when its search reported its last cycle, ``stopped_early`` when the scheduler
stopped it first, ``failed`` when it errored (after its retries). Only completed trials can be on the Pareto
front (with one objective: the best completed trial(s)).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from typing import Any, Optional

from colt_ray.core.config import RunConfig
from colt_ray.parallel.sweep.metrics import METRICS
from colt_ray.parallel.sweep.metrics import as_float as _val
from colt_ray.parallel.sweep.spec import SweepSpec
from colt_ray.parallel.sweep.trainable import trial_run_id
from colt_ray.results.writer import ResultsWriter

RUN_STATUS = {"completed": "completed", "stopped_early": "stopped", "failed": "failed"}


def trial_status(metrics: dict[str, Any], error: Any) -> str:
    """``failed`` / ``completed`` / ``stopped_early`` from a trial's last result and error."""
    if error is not None:
        return "failed"
    return "completed" if metrics.get("search_done") else "stopped_early"


def trial_row(
    spec: SweepSpec, trial_id: str, config: dict[str, Any], metrics: dict[str, Any], error: Any
) -> dict[str, Any]:
    """The TRIALS row of one trial (``pareto`` filled in later by :func:`mark_pareto`)."""
    status = trial_status(metrics, error)
    return {
        "sweep": spec.name,
        "trial_id": trial_id,
        "run_id": metrics.get("run_id") or _run_id(config, trial_id),
        "status": status,
        "stopped_early": status == "stopped_early",
        "config_json": json.dumps(config, sort_keys=True, default=str),
        "cycles_done": metrics.get("cycle"),
        **{m.column: m.store(metrics.get(m.name)) for m in map(METRICS.get, METRICS) if m.column},
        "prepare_seconds": _val(metrics.get("prepare_seconds")),
        "checkpoint_seconds": _val(metrics.get("checkpoint_seconds")),
        "train_cpu_seconds": _val(metrics.get("train_cpu_seconds")),
        "objective": _val(metrics.get(spec.objectives[0].metric)),
        "pareto": False,
        "_values": [_val(metrics.get(o.metric)) for o in spec.objectives],
        "_error": " ".join(f"{type(error).__name__}: {error}".split())[:500] if error is not None else None,
    }


def rows_from_results(spec: SweepSpec, results: Iterable[Any]) -> list[dict[str, Any]]:
    """TRIALS rows from a Tune ``ResultGrid``, Pareto flags set, sorted by trial id."""
    rows = []
    for r in results:
        metrics = dict(r.metrics or {})
        trial_id = metrics.get("trial_id") or os.path.basename(str(r.path)).removeprefix("trial_")
        rows.append(trial_row(spec, trial_id, dict(r.config or {}), metrics, r.error))
    rows.sort(key=lambda row: row["trial_id"])
    mark_pareto(spec, rows)
    return rows


def mark_pareto(spec: SweepSpec, rows: list[dict[str, Any]]) -> None:
    """Set ``pareto`` on the completed rows not dominated in every objective (others False)."""
    signs = [1.0 if o.mode == "max" else -1.0 for o in spec.objectives]
    pts = {
        i: [s * v for s, v in zip(signs, row["_values"])]
        for i, row in enumerate(rows)
        if row["status"] == "completed" and all(v is not None for v in row["_values"])
    }
    for i, row in enumerate(rows):
        row["pareto"] = i in pts and not any(_dominates(pts[j], pts[i]) for j in pts if j != i)


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def write_trials(out: str, rows: list[dict[str, Any]]) -> str:
    """Write ``<out>/trials.parquet``; returns its path."""
    return ResultsWriter(out).write_trials([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])


def settle_runs(out: str, rows: list[dict[str, Any]]) -> int:
    """Rewrite the ``runs`` row of every trial whose run status disagrees with how the trial ended
    (stopped by ASHA, or killed without a chance to say so); returns how many were rewritten. Reads the
    runs table once (no other table)."""
    fixed = 0
    current_rows = read_run_rows(out) if any(r["run_id"] for r in rows) else {}
    for row in rows:
        want = RUN_STATUS.get(row["status"])
        current = current_rows.get(row["run_id"]) if want else None
        if current is None or current.get("status") == want:
            continue
        current.update(status=want, finished_at=current.get("finished_at") or dt.datetime.now(dt.timezone.utc))
        for key in (
            "final_sparsity",
            "final_acc_best",
            "final_acc_final",
            "cycles_done",
            "sample_epochs",
            "wall_seconds",
        ):
            if row.get(key) is not None:
                current[key] = row[key]
        if want == "failed" and not current.get("error"):
            current["error"] = row.get("_error") or "the trial ended without reporting why"
        ResultsWriter(out).write_run(current)
        fixed += 1
    return fixed


def read_run_rows(out: str) -> dict[str, dict[str, Any]]:
    """Every ``runs`` row of the sweep directory ``out`` by run id (parts and compacted files alike, one row
    per run: see ``colt_ray.results.reader``); empty when no run has started."""
    from colt_ray.core.errors import ConfigError
    from colt_ray.results.reader import read_table, table_files

    try:
        fs, files = table_files(out)
    except ConfigError:  # no runs/ yet
        return {}
    return {row["run_id"]: row for row in read_table(fs, files["runs"], "runs").to_pylist()}


def interrupted(spec: SweepSpec, rows: list[dict[str, Any]]) -> bool:
    """Whether the sweep ended before every trial did (Ctrl-C): fewer trials than planned, or, without a
    scheduler that could stop them, a trial whose search had not finished."""
    unfinished = spec.scheduler is None and any(r["status"] == "stopped_early" for r in rows)
    return len(rows) < spec.trial_count or unfinished


def mark_interrupted(spec: SweepSpec, rows: list[dict[str, Any]]) -> None:
    """After an interruption, a trial whose search had not finished is ``running`` (a ``--resume`` continues
    it), not stopped early, unless a scheduler may have stopped it."""
    if spec.scheduler is not None:
        return
    for r in rows:
        if r["status"] == "stopped_early":
            r.update(status="running", stopped_early=False, pareto=False)


def summary_lines(spec: SweepSpec, rows: list[dict[str, Any]], out: str, resume: str = "") -> list[str]:
    """What the command prints at the end: counts, the best trial or the Pareto front, where results are;
    ``resume``: the command that continues the sweep, printed when it was interrupted."""
    statuses = ("completed", "stopped_early", "failed", "running")
    count = {s: sum(r["status"] == s for r in rows) for s in statuses}
    lines = [
        f"sweep {spec.name}: {len(rows)} trials ({count['completed']} completed, "
        f"{count['stopped_early']} stopped early, {count['failed']} failed"
        + (f", {count['running']} interrupted" if count["running"] else "")
        + ")"
    ]
    if interrupted(spec, rows):
        lines.append(
            f"sweep {spec.name}: interrupted with {spec.trial_count - count['completed'] - count['failed']} of "
            f"{spec.trial_count} trials to go; continue with: "
            + (resume or f"colt-ray sweep {spec.source} --name {spec.name} --resume")
        )
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["final_sparsity"] or 0.0)
    title = "Pareto front" if spec.multi else "best"
    names = ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives)
    lines.append(f"{title} over {names}:" if front else "no completed trial to rank")
    shown = [*spec.search, *(["method"] if spec.compare else []), *(["seed"] if spec.seeds > 1 else [])]
    for r in front:
        config = json.loads(r["config_json"])
        searched = ", ".join(f"{k}={_short(config.get(k))}" for k in shown)
        values = ", ".join(f"{o.metric} {_short(v)}" for o, v in zip(spec.objectives, r["_values"]))
        lines.append(f"  trial {r['trial_id']} (run {r['run_id']}): {values} | {searched}")
    lines.append(
        f"results: {out}/ (trials.parquet, runs/, cycles/, layers/, tickets/); summarise with: colt-ray report {out}"
    )
    return lines


def _run_id(config: dict[str, Any], trial_id: str) -> Optional[str]:
    try:
        return trial_run_id(RunConfig.from_flat(config), trial_id)
    except Exception:  # a config that never made a run has no run id
        return None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
