"""Runs that a killed driver's last experiment snapshot does not know, removed before a ``--resume``.

Tune saves its experiment snapshot on a period (``tuner.build_tuner``), not whenever a trial starts. A trial
that started after the last snapshot of a driver that was then killed is unknown to the restored Tuner and to
the restored searcher: the resumed sweep samples its place again, under a new trial id (Tune's ids are
random). Its results (a ``runs`` row, the parts of the cycles it finished, tickets, its checkpoint file) would
be those of a trial that is not in the sweep, so they are removed before the sweep resumes: like a write-ahead
log's uncommitted tail. Every trial that the snapshot knows keeps everything; its checkpoint file says where
it continues.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from colt_ray.parallel.sweep.state import resume_rel
from colt_ray.parallel.sweep.tuner import TUNE_DIR
from colt_ray.results import layout
from colt_ray.results.writer import read_bytes, remove_file

SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX = "experiment_state-", ".json"  # TuneController.CKPT_FILE_TMPL


def list_names(out: str, *rel: str) -> list[str]:
    """The names of the files in ``out``/``rel`` (a local directory or a ``pyarrow.fs`` URI); [] if none."""
    from colt_ray.results.listing import entries

    fs, root = layout.resolve(out)
    return sorted(name for name, is_dir, _ in entries(fs, layout.join(root, *rel, remote=fs is not None)) if not is_dir)


def snapshot_trial_ids(out: str) -> Optional[set[str]]:
    """The trial ids in the newest experiment snapshot of the sweep in ``out``, or None when there is none."""
    trials = snapshot_trials(out)
    return None if trials is None else set(trials)


def snapshot_trials(out: str) -> Optional[dict[str, str]]:
    """Trial id -> Tune status (``TERMINATED``, ``ERROR``, ...) in the newest experiment snapshot of the sweep
    in ``out``, or None when there is none."""
    names = [n for n in list_names(out, TUNE_DIR) if n.startswith(SNAPSHOT_PREFIX) and n.endswith(SNAPSHOT_SUFFIX)]
    if not names:
        return None
    raw = read_bytes(out, (TUNE_DIR, max(names)))  # the name holds its session's start time: max is newest
    if raw is None:
        return None
    states = [json.loads(trial[0]) for trial in json.loads(raw)["trial_data"]]
    return {t["trial_id"]: t.get("status", "") for t in states}


def drop_errored(out: str) -> list[str]:
    """Remove every file of the runs of trials the newest snapshot has as errored (``--restart-errored``:
    they start again from cycle 0, so their earlier cycles must not stay beside the new ones); returns
    their run ids."""
    errored = {t for t, status in (snapshot_trials(out) or {}).items() if status == "ERROR"}
    runs = [r for r in orphan_runs(out, set()) if trial_of(r) in errored]  # every run, then those errored
    for run_id in runs:
        remove_run(out, run_id)
    if runs and compacted(out):
        from colt_ray.results.compact import compact

        compact(out, drop_runs=frozenset(runs))
    return runs


def trial_of(run_id: str) -> str:
    """The trial id in a sweep run id (``<config hash>-<trial id>``, ``trainable.trial_run_id``)."""
    return run_id.rsplit("-", 1)[-1]


def orphan_runs(out: str, known: set[str]) -> list[str]:
    """The run ids with a ``runs`` row in ``out`` (a part or a compacted file) whose trial is not in ``known``."""
    from colt_ray.core.errors import ConfigError
    from colt_ray.results.reader import read_table, table_files

    try:
        fs, files = table_files(out)
    except ConfigError:  # no run has started
        return []
    runs = read_table(fs, files["runs"], "runs", ["run_id"]).column("run_id").to_pylist()
    return sorted(r for r in runs if trial_of(r) not in known)


def compacted(out: str) -> bool:
    """Whether any table of ``out`` holds compacted files (an interrupted sweep compacted by hand)."""
    return any(layout.compacted_generation(n) is not None for t in layout.TABLE_DIRS for n in list_names(out, t))


def remove_run(out: str, run_id: str) -> None:
    """Delete every file of ``run_id`` in ``out``: its cycle and layer parts, tickets, checkpoint file, and its
    ``runs`` row last (a removal killed mid-way is found and finished by the next resume)."""
    prefix = f"{run_id}-c"
    for table in (layout.CYCLES_DIR, layout.LAYERS_DIR):
        for name in list_names(out, table):
            if name.startswith(prefix):
                remove_file(out, (table, name))
    for name in list_names(out, layout.TICKETS_DIR, run_id):
        remove_file(out, (layout.TICKETS_DIR, run_id, name))
    _remove_dir(out, (layout.TICKETS_DIR, run_id))
    remove_file(out, resume_rel(trial_of(run_id)))
    remove_file(out, layout.runs_rel(run_id))


def drop_orphans(out: str) -> list[str]:
    """Remove the runs of trials that the sweep's newest snapshot does not know; returns their run ids."""
    known = snapshot_trial_ids(out)
    if known is None:
        return []
    orphans = orphan_runs(out, known)
    for run_id in orphans:
        remove_run(out, run_id)
    if orphans and compacted(out):  # their rows inside compacted files: a generation without them
        from colt_ray.results.compact import compact

        compact(out, drop_runs=frozenset(orphans))
    return orphans


def _remove_dir(out: str, rel: tuple[str, ...]) -> None:
    fs, root = layout.resolve(out)
    try:
        if fs is None:
            os.rmdir(os.path.join(root, *rel))
        elif not _object_store(fs):
            fs.delete_dir(layout.join(root, *rel, remote=True))
    except (FileNotFoundError, OSError):
        pass  # never created, or already gone


def _object_store(fs: Any) -> bool:
    return getattr(fs, "type_name", "") in ("s3", "gcs")  # no directories to remove there


def drop_temp_files(out: str) -> int:
    """Remove the temporary files (``*.tmp-*``) that killed writers left in the table folders of ``out`` and
    beside ``trials.parquet``; returns how many. Only for a resume that holds the sweep's lease: no other
    driver, and none of its writers, can be writing there (a live writer renames its file within seconds)."""
    removed = 0
    for rel in ((), *((d,) for d in layout.TABLE_DIRS)):
        for name in list_names(out, *rel):
            if layout.TMP_MARK in name:
                remove_file(out, (*rel, name))
                removed += 1
    return removed
