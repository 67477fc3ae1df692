"""Sweep efficiency: how much of the machine's CPU time went into training, and where the rest went.

    efficiency = training CPU seconds / (sweep wall seconds x the cluster's CPUs)

Training CPU seconds are the ``cpu_seconds`` of every training row the sweep wrote (``cycles``: shards, ticket
evaluations, IMP levels), as each trial summed them when it wrote them (``train_cpu_seconds``, kept in its
checkpoint), so the driver reads no table for them; a cycle lost to an interruption and trained again counts
once, and its lost attempt counts as waste. The wall seconds add up every session of the sweep (a first run and each
``--resume``), each with the CPUs the cluster had then. What is not training is split into the trials' set-up
(data loading, theta_0, trainer construction: ``prepare_seconds``), their results and checkpoints
(``checkpoint_seconds``), and the rest: Ray and Tune start-up, trial processes starting, cores left idle,
waits on evaluations. ``sweep_summary.json`` in the sweep directory keeps the sessions and the last figures.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable
from typing import Any, Optional

from colt_ray.results.writer import read_bytes, write_bytes_atomic

SUMMARY_FILE = "sweep_summary.json"


def read_sessions(out: str) -> list[dict[str, Any]]:
    """The sessions recorded by earlier runs of this sweep (``[]`` for a new sweep)."""
    raw = read_bytes(out, (SUMMARY_FILE,))
    return list(json.loads(raw).get("sessions", [])) if raw else []


def session(started_at: dt.datetime, wall_seconds: Optional[float], cores: float) -> dict[str, Any]:
    """A session's record; ``wall_seconds`` None while it runs (and for ever, if it was killed)."""
    wall = None if wall_seconds is None else float(wall_seconds)
    return {"started_at": started_at.isoformat(), "wall_seconds": wall, "cores": float(cores)}


def open_session(out: str, started_at: dt.datetime, cores: float) -> list[dict[str, Any]]:
    """Record a session as started (so that a session killed outright is known to be missing a length);
    returns the earlier sessions."""
    earlier = read_sessions(out)
    write_bytes_atomic(
        out, (SUMMARY_FILE,), json.dumps({"sessions": [*earlier, session(started_at, None, cores)]}).encode()
    )
    return earlier


def training_cpu_seconds(cycles: Any) -> float:
    """CPU seconds of every training row (``cpu_seconds``; rows written before that column: ``wall_seconds``):
    ``cycles`` is the CYCLES table (a DataFrame) or a cycle's rows as dicts (a trial sums its own as it writes
    them)."""
    if len(cycles) == 0:
        return 0.0
    rows = cycles[["cpu_seconds", "wall_seconds"]].to_dict("records") if hasattr(cycles, "to_dict") else cycles
    return math.fsum(_known(r.get("cpu_seconds"), _known(r.get("wall_seconds"), 0.0)) for r in rows)


def _known(value: Any, otherwise: float) -> float:
    """``value`` as a float, or ``otherwise`` when it is missing (None, or NaN in a DataFrame)."""
    return otherwise if value is None or value != value else float(value)


def efficiency(
    training_cpu: float, sessions: Iterable[dict[str, Any]], prepare: float, checkpoint: float
) -> dict[str, Any]:
    """The figures of the sweep: its CPU capacity (wall x cores over the sessions) and what it went to."""
    sessions = list(sessions)
    known = [s for s in sessions if s["wall_seconds"] is not None]
    capacity = math.fsum(s["wall_seconds"] * s["cores"] for s in known)
    parts = {"training": training_cpu, "trial set-up": prepare, "results and checkpoints": checkpoint}
    parts["other (Ray and trial start-up, idle cores, waits)"] = capacity - math.fsum(parts.values())
    return {
        "efficiency": training_cpu / capacity if capacity > 0 else None,
        "capacity_cpu_seconds": capacity,
        "wall_seconds": math.fsum(s["wall_seconds"] for s in known),
        "cores": max((s["cores"] for s in sessions), default=0.0),
        "sessions_without_length": len(sessions) - len(known),  # killed outright: left out of the capacity
        "parts_cpu_seconds": parts,
        "sessions": sessions,
    }


def trial_seconds(rows: Iterable[dict[str, Any]], key: str) -> float:
    """The sum of ``key`` (``prepare_seconds``, ``checkpoint_seconds``) over TRIALS rows (missing: 0)."""
    return math.fsum(float(r.get(key) or 0.0) for r in rows)


def trials_training_cpu(rows: list[dict[str, Any]]) -> Optional[float]:
    """The training CPU seconds the trials reported, or None if a trial did not (a trial of an older version
    resumed, or none reported: then only the cycles table knows)."""
    values = [r.get("train_cpu_seconds") for r in rows]
    return math.fsum(values) if values and all(v is not None for v in values) else None


def summarise(
    out: str, rows: list[dict[str, Any]], sessions: list[dict[str, Any]], cycles: Callable[[], Any]
) -> dict[str, Any]:
    """The sweep's efficiency, written to ``sweep_summary.json`` (atomically) and returned: training from the
    trials' rows, else (``cycles()``, read only then) from the cycles table."""
    training = trials_training_cpu(rows)
    summary = efficiency(
        training if training is not None else training_cpu_seconds(cycles()),
        sessions,
        trial_seconds(rows, "prepare_seconds"),
        trial_seconds(rows, "checkpoint_seconds"),
    )
    write_bytes_atomic(out, (SUMMARY_FILE,), json.dumps(summary, indent=2).encode())
    return summary


def efficiency_lines(summary: dict[str, Any]) -> list[str]:
    """``sweep efficiency: 84.2% of 2 CPUs x 1520 s went into training (...)``"""
    eff = summary["efficiency"]
    if eff is None:
        return ["sweep efficiency: no wall time recorded"]
    capacity = summary["capacity_cpu_seconds"]
    parts = summary["parts_cpu_seconds"].items()
    rest = ", ".join(f"{name} {share(v, capacity)}" for name, v in parts if name != "training")
    n = len(summary["sessions"]) - summary["sessions_without_length"]
    sessions = f" over {n} sessions" if n > 1 else ""
    lines = [
        f"sweep efficiency: {100 * eff:.1f}% of the CPU time ({summary['cores']:g} CPUs x "
        f"{summary['wall_seconds']:.0f} s{sessions}) went into training; {rest}"
    ]
    if summary["sessions_without_length"]:
        lines.append(
            f"  ({summary['sessions_without_length']} earlier session(s) ended without recording their length "
            "(killed): their time is left out, so this figure is too high)"
        )
    return lines


def share(value: float, total: float) -> str:
    return f"{100 * value / total:.1f}%" if total > 0 else "n/a"
