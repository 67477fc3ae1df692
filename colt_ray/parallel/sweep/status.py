"""``colt-ray status SWEEP_DIR_OR_URI``: a running (or finished) sweep in a few lines a person reads in a
terminal, from the files the sweep keeps up to date (``live.LiveTable``): ``trials.parquet``,
``sweep_status.json`` and ``sweep_summary.json`` (its sessions). Reads three small files; starts no Ray."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any, Optional

from colt_ray.core.errors import ConfigError
from colt_ray.parallel.sweep.efficiency import SUMMARY_FILE
from colt_ray.parallel.sweep.metrics import METRICS
from colt_ray.results import layout
from colt_ray.results.writer import read_bytes

STATUS_FILE = "sweep_status.json"  # written by live.LiveTable (which imports Ray; this module does not)


def status_lines(out: str, now: Optional[dt.datetime] = None) -> list[str]:
    """The lines ``colt-ray status`` prints for the sweep directory ``out``; a ConfigError when ``out`` holds
    no sweep that has started a trial."""
    import pyarrow.parquet as pq

    now = now or dt.datetime.now(dt.timezone.utc)
    raw = read_bytes(out, ("trials.parquet",))
    if raw is None:
        raise ConfigError("sweep", f"no trials.parquet at {out}: not a sweep directory, or no trial has reported yet")
    trials = pq.read_table(io.BytesIO(raw)).to_pandas()
    status = _json(out, STATUS_FILE) or {}
    sessions = (_json(out, SUMMARY_FILE) or {}).get("sessions", [])
    name = status.get("sweep") or (trials["sweep"].iloc[0] if len(trials) else "?")
    planned = status.get("planned_trials")
    counts = trials["status"].value_counts().to_dict()
    done = sum(counts.get(s, 0) for s in ("completed", "stopped_early", "failed"))
    running = counts.get("running", 0)
    finished = not running and planned is not None and done >= planned
    lines = [f"sweep {name} at {out}" + _age(status.get("updated_at"), now, finished)]
    rest = [] if planned is None else [f"{max(0, planned - done - running)} to start"]
    lines.append(
        f"trials: {'' if planned is None else f'{planned} planned; '}{done} done ({counts.get('completed', 0)} "
        f"completed, {counts.get('stopped_early', 0)} stopped early, {counts.get('failed', 0)} failed), "
        + ", ".join([f"{running} running", *rest])
    )
    lines += _best_lines(trials, status)
    elapsed = _elapsed(sessions, now)
    if elapsed is not None:
        line = f"elapsed {_hms(elapsed)}"
        if planned and 0 < done < planned:
            line += f"; about {_hms(elapsed / done * (planned - done))} left at the pace so far ({done} of {planned})"
        lines.append(line)
    cluster, held = status.get("cluster") or {}, status.get("held") or {}
    if cluster and not finished:
        parts = [f"{held.get(k, 0.0):g} of {cluster[k]:g} {k}s" for k in ("CPU", "GPU") if k in cluster]
        lines.append(f"cluster: {', '.join(parts)} held by the {running} running trial(s)")
    return lines


def _best_lines(trials: Any, status: dict[str, Any]) -> list[str]:
    """The best completed trial on each objective, with its searched settings."""
    objectives = status.get("objectives") or []
    search = status.get("search") or []
    completed = trials[trials["status"] == "completed"]
    if not objectives:
        return []
    if completed.empty:
        return ["best: no trial completed yet"]
    lines = []
    for i, (metric, mode) in enumerate(objectives):
        column = "objective" if i == 0 else (METRICS.get(metric).column if metric in METRICS else None) or metric
        if column not in completed or completed[column].isna().all():
            continue
        values = completed[column]
        row = completed.loc[values.idxmax() if mode == "max" else values.idxmin()]
        config = json.loads(row["config_json"])
        settings = ", ".join(f"{k}={_short(config.get(k))}" for k in search)
        lines.append(f"best {metric} ({mode}): {row[column]:.4g}, trial {row['trial_id']}: {settings}")
    return lines


def _json(out: str, name: str) -> Optional[dict[str, Any]]:
    raw = read_bytes(out, (name,))
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _elapsed(sessions: list[dict[str, Any]], now: dt.datetime) -> Optional[float]:
    """Seconds the sweep has run over its sessions (the one still running counts up to ``now``)."""
    if not sessions:
        return None
    total = 0.0
    for s in sessions:
        if s.get("wall_seconds") is not None:
            total += float(s["wall_seconds"])
        elif s is sessions[-1]:
            total += max(0.0, (now - dt.datetime.fromisoformat(s["started_at"])).total_seconds())
    return total


def _age(updated_at: Optional[str], now: dt.datetime, finished: bool) -> str:
    if finished:
        return " (finished)"
    if not updated_at:
        return ""
    age = (now - dt.datetime.fromisoformat(updated_at)).total_seconds()
    return f" (updated {_hms(age)} ago{'; the driver may have stopped' if age > 300 else ''})"


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def status_main(out: str) -> int:
    """``colt-ray status``: print the lines; a ConfigError (exit 2) when ``out`` holds no sweep."""
    if not layout.is_uri(out):
        import os

        if not os.path.isdir(out):
            raise ConfigError("sweep", f"{out} is not a directory (give a sweep directory, STORAGE/NAME)")
    for line in status_lines(out):
        print(line)
    return 0
