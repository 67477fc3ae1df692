"""The sweep driver: check everything, then start (or join) Ray, run or resume the Tuner, write trials.

``plan_sweep`` does every check that needs no Ray (the YAML, every corner of the space, the dataset's class
count, the storage location, whether a sweep of that name exists), so bad input ends before Ray starts or
anything is written. ``run_sweep`` then runs it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from colt_ray.core.errors import ConfigError, stderr_line
from colt_ray.parallel.sweep.checks import check_spec
from colt_ray.parallel.sweep.parse import load_spec
from colt_ray.parallel.sweep.spec import SweepSpec, sweep_name
from colt_ray.parallel.sweep.trackers import check_trackers, tracker_lines
from colt_ray.results import layout

Echo = Callable[[str], None]
DEFAULT_STORAGE = "sweeps"


PLAN_RECORD = ("sweep_plan.json",)  # what the sweep was started with; --resume reads it back (resume_plan)
# the command-line choices that shape a sweep's spec, as the record keeps them (and their defaults)
PLAN_KEYS = {"settings": [], "num_samples": None, "max_concurrent": None, "smoke_test": False}


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: its spec (overrides applied), results directory, and whether it resumes."""

    spec: SweepSpec
    out: str
    resume: bool
    restart_errored: bool = False  # --resume --restart-errored: errored trials start over from cycle 0
    # how it was started: space, storage, name and PLAN_KEYS (written once, read back by a resume)
    record: Optional[dict] = None

    def resume_command(self) -> str:
        """The whole command that continues this sweep, as a person pastes it (every --set and override)."""
        import shlex

        r = self.record or {}
        args = ["colt-ray", "sweep", r.get("space", self.spec.source), "--storage", r.get("storage", self.out)]
        args += ["--name", self.spec.name]
        for item in r.get("settings", []):
            args += ["--set", item]
        for key in ("num_samples", "max_concurrent"):
            if r.get(key) is not None:
                args += [f"--{key.replace('_', '-')}", str(r[key])]
        if r.get("smoke_test"):
            args.append("--smoke-test")
        return shlex.join([*args, "--resume"])


def resume_plan(out: str, asked: dict[str, Any]) -> dict[str, Any]:
    """A resume's settings and budget: those the sweep started with (its ``sweep_plan.json``). One given again
    must be the same (Tune's restored experiment keeps its trial count and param space whatever the command
    says, so another would only mislead the driver's counts); a one-line ConfigError otherwise."""
    import json

    from colt_ray.results.writer import read_bytes

    raw = read_bytes(out, PLAN_RECORD)
    if raw is None:  # a sweep started before the record existed: the command line as given
        return asked
    started = json.loads(raw)
    merged = {}
    for key, default in PLAN_KEYS.items():
        was, now = started.get(key, default), asked.get(key, default)
        if now not in (default, was):
            flag = "--set" if key == "settings" else f"--{key.replace('_', '-')}"
            shown = " ".join(f"--set {s}" for s in was) if key == "settings" else f"{flag} {was}"
            raise ConfigError(
                key.replace("_", "-"),
                f"the sweep was started with {shown if was not in (None, False, []) else f'no {flag}'}; a resume "
                "keeps what it started with: leave it out or give the same",
            )
        merged[key] = was
    return merged


def storage_location(storage: str) -> str:
    """A URI unchanged (``s3://...``); a local path made absolute (trials run in other directories)."""
    return storage if layout.is_uri(storage) else os.path.abspath(layout.local_path(storage))


def plan_sweep(
    space: str,
    storage: str = DEFAULT_STORAGE,
    name: Optional[str] = None,
    resume: bool = False,
    num_samples: Optional[int] = None,
    max_concurrent: Optional[int] = None,
    smoke_test: bool = False,
    settings: Sequence[str] = (),
    optuna_storage: Optional[str] = None,
    restart_errored: bool = False,
) -> SweepPlan:
    """Load and check the search space ``space`` (``settings``: ``KEY=VALUE`` fixed over the file's) and the
    storage; raises ConfigError before anything starts. ``smoke_test`` shrinks the sweep (see
    ``SweepSpec.smoke``) before the overrides apply."""
    from colt_ray.parallel.sweep.lease import check_free
    from colt_ray.parallel.sweep.tuner import can_restore
    from colt_ray.results.writer import check_writable

    if restart_errored and not resume:
        raise ConfigError("restart-errored", "only applies with --resume (it restarts the errored trials of a sweep)")
    asked = {
        "settings": list(settings), "num_samples": num_samples, "max_concurrent": max_concurrent,
        "smoke_test": smoke_test,
    }  # fmt: skip
    spec = load_spec(space, settings)
    out = layout.sweep_dir(storage_location(storage), sweep_name(name, "name") if name is not None else spec.name)
    try:
        check_writable(out)
    except ConfigError as e:
        raise ConfigError("storage", str(e)[len(e.field) + 2 :]) from None
    if resume:  # the settings and budget the sweep started with
        started = resume_plan(out, asked)
        if started["settings"] != asked["settings"]:
            spec = load_spec(space, started["settings"])
        asked = started
    spec = (spec.smoke() if asked["smoke_test"] else spec).with_overrides(
        name=name,
        num_samples=asked["num_samples"],
        max_concurrent=asked["max_concurrent"],
        optuna_storage=optuna_storage,
    )
    check_spec(spec)
    check_free(out, spec.name, resume)  # a sweep running on this name: say which (before "already exists")
    exists = can_restore(out)
    if resume and not exists:
        raise ConfigError("resume", f"no sweep to resume at {out} (check --storage and --name)")
    if not resume and exists:
        raise ConfigError(
            "name",
            f"sweep {spec.name!r} already exists at {out}; pass --resume to continue it, or choose another --name",
        )
    spec = check_study_storage(spec, out, resume)
    check_trackers(spec.callbacks, out, spec.name, remote=layout.is_uri(out))
    record = {"space": space, "storage": storage, "name": spec.name, **asked}
    return SweepPlan(spec, out, resume, restart_errored, record)


def finished_already(out: str, spec: SweepSpec, restart_errored: bool) -> bool:
    """Whether the newest snapshot of the sweep in ``out`` has every planned trial ended (errored ones count as
    ended unless ``--restart-errored`` reruns them)."""
    from colt_ray.parallel.sweep.orphans import snapshot_trials

    states = snapshot_trials(out) or {}
    ended = ("TERMINATED",) if restart_errored else ("TERMINATED", "ERROR")
    return len(states) >= spec.trial_count and all(s in ended for s in states.values())


def check_study_storage(spec: SweepSpec, out: str, resume: bool) -> SweepSpec:
    """``spec`` with the Optuna storage its study is in: a resume keeps the one the sweep started with (its
    record in ``optuna/storage.txt``) and refuses another; a storage named by the space or ``--optuna-storage``
    must open now, before Ray starts (a one-line ConfigError otherwise)."""
    import dataclasses

    from colt_ray.parallel.sweep.tuner import OPTUNA_RECORD, open_storage
    from colt_ray.results.writer import read_bytes

    raw = read_bytes(out, OPTUNA_RECORD) if resume else None
    recorded = raw.decode() if raw else None
    asked = spec.sampler.storage
    if resume and asked != recorded and (asked is not None or recorded is None):
        where = recorded or "the sweep's default storage"
        raise ConfigError(
            "optuna-storage", f"sweep {spec.name!r} keeps its study in {where}, not {asked}; resume it with that one"
        )
    if recorded:
        spec = dataclasses.replace(spec, sampler=dataclasses.replace(spec.sampler, storage=recorded))
    if spec.sampler.storage:
        open_storage(spec.sampler.storage)
    return spec


def trial_count_text(spec: SweepSpec) -> str:
    """``12 trials``, or for a compare/seeds sweep ``24 trials (6 recipes x 2 methods x 2 seeds)``."""
    if not spec.replicated:
        return f"{spec.trial_count} trials"
    parts = [f"{spec.budget.num_samples} recipes"]
    if spec.compare:
        parts.append(f"{len(spec.compare)} methods ({', '.join(spec.compare)})")
    if spec.seeds > 1:
        parts.append(f"{spec.seeds} seeds")
    return f"{spec.trial_count} trials ({' x '.join(parts)})"


def sweep_cycles(out: str) -> Any:
    """The sweep's CYCLES rows (an empty frame when no trial wrote any)."""
    from colt_ray.results.reader import load_results

    try:
        return load_results(out).cycles
    except ConfigError:  # no run got as far as its first row
        return []


def check_cluster(spec: SweepSpec, echo: Echo = stderr_line) -> bool:
    """Whether the sweep's trials keep their GPU shares on the connected cluster (``gpus.plan_gpus`` over the
    largest trial: on a cluster without GPUs they are dropped for the CPU, said in one line, or waited for
    from the autoscaler, else a ConfigError), once the cluster, or the node types its autoscaler declares, can
    place that trial (ConfigError otherwise: checked before any wait)."""
    import ray

    from colt_ray.core.config import RunConfig
    from colt_ray.parallel.cluster import declared_node_types
    from colt_ray.parallel.gpus import carry_out, plan_gpus
    from colt_ray.parallel.sweep.checks import check_fits_cluster, largest_trial

    _, bundles = largest_trial(spec, keep_gpus=True, by="GPU")
    res = RunConfig.from_flat(spec.base_config()).resources
    plan = plan_gpus(bundles, res.allow_cpu_fallback)
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    check_fits_cluster(spec, ray.cluster_resources(), nodes, declared_node_types(), keep_gpus=plan.keep)
    return carry_out(plan, bundles, res.start_timeout, echo)


def init_ray(address: Optional[str]) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``, or a cluster started with ``ray start`` here), else start a
    local Ray. Does nothing if Ray is up already. True when this call connected or started it."""
    from colt_ray.parallel.cluster import init_ray as start

    return start(address, detect=True)


def drop_orphan_runs(spec: SweepSpec, out: str) -> None:
    """Before a resume (this driver holds the lease): remove the temporary files of killed writers and the
    runs of trials started after the killed driver's last snapshot (``orphans``), saying so in one line each."""
    from colt_ray.parallel.sweep.orphans import drop_orphans, drop_temp_files

    temp = drop_temp_files(out)
    if temp:
        stderr_line(f"sweep {spec.name}: removed {temp} temporary file(s) that the interrupted driver's writers left")
    dropped = drop_orphans(out)
    if dropped:
        stderr_line(
            f"sweep {spec.name}: removed {len(dropped)} run(s) started after the interrupted driver's last "
            f"snapshot (their places are sampled again): {', '.join(dropped)}"
        )


def drop_errored_runs(spec: SweepSpec, out: str) -> None:
    """``--restart-errored``: remove the results and checkpoint files of the errored trials, which start over."""
    from colt_ray.parallel.sweep.orphans import drop_errored

    dropped = drop_errored(out)
    stderr_line(
        f"sweep {spec.name}: restarting {len(dropped)} errored trial(s) from cycle 0"
        + (f" (their runs removed: {', '.join(dropped)})" if dropped else "")
    )


def run_sweep(
    plan: SweepPlan,
    address: Optional[str] = None,
    echo: Echo = print,
    verbose: int = 1,
    since: Optional[tuple[dt.datetime, float]] = None,
) -> list[dict]:
    """Run (or resume) the sweep of ``plan``; write trials.parquet and settle the runs rows; return the
    TRIALS rows (with ``_values``, the objective values). ``since``: when the command started (wall clock,
    ``time.perf_counter()``), so the sweep's efficiency counts its checks and Ray's start-up too.

    The sweep holds the lease of its directory throughout (``lease``: taken before Ray starts or anything is
    written, a one-line ConfigError when another sweep holds it; removed at the end, on an error or Ctrl-C too)."""
    from colt_ray.parallel.sweep.lease import acquire

    with acquire(plan.out, plan.spec.name, plan.resume) as lease:
        return _run_leased(plan, lease, address, echo, verbose, since)


def _run_leased(
    plan: SweepPlan, lease: Any, address: Optional[str], echo: Echo, verbose: int, since: Any
) -> list[dict]:
    import ray

    from colt_ray.parallel.cluster import stop_ray
    from colt_ray.parallel.sweep.datasets import put_datasets
    from colt_ray.parallel.sweep.efficiency import efficiency_lines, open_session, session, summarise
    from colt_ray.parallel.sweep.trials import (
        interrupted,
        mark_interrupted,
        rows_from_results,
        settle_runs,
        summary_lines,
        write_trials,
    )
    from colt_ray.parallel.sweep.tuner import OPTUNA_RECORD, build_tuner, dashboard_line, restore_tuner
    from colt_ray.results.compact import compact
    from colt_ray.results.writer import write_bytes_atomic

    # no CSV/JSON/TensorBoard files per trial unless a space names them (callbacks:, trackers.py, with the
    # infinite *_at_target costs left out): the sweep's results are its Parquet tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune's status table as tuner.progress_table makes it (objective columns, sorted by the first objective):
    # the newer output engine, Ray's default, ignores a progress reporter and is not told the objective
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    began, t0 = since or (dt.datetime.now(dt.timezone.utc), time.perf_counter())
    started = init_ray(address)
    spec, out = plan.spec, plan.out
    cores, rows = float(ray.cluster_resources().get("CPU", 0)), None
    try:  # before anything is written: a trial the cluster can never place is an error, not a wait
        keep_gpus = check_cluster(spec)
    except BaseException:
        if started:
            stop_ray(quiet=True)  # the error stays one line: nothing of the workers stopped with it
        raise
    earlier = open_session(out, began, cores)
    try:
        stderr_line(
            f"sweep {spec.name}: {'resuming' if plan.resume else 'starting'}, {trial_count_text(spec)}, "
            f"at most {spec.budget.max_concurrent} at once -> {out}"
        )
        if spec.sampler.storage and not plan.resume:  # --resume reads it back (check_study_storage)
            write_bytes_atomic(out, OPTUNA_RECORD, spec.sampler.storage.encode())
        if not plan.resume:  # --resume reads it back (resume_plan)
            write_bytes_atomic(out, PLAN_RECORD, json.dumps(plan.record, indent=1).encode())
        elif finished_already(out, spec, plan.restart_errored):
            stderr_line(f"sweep {spec.name}: every trial had finished already; nothing to resume")
        stderr_line(dashboard_line(spec, out))
        for line in tracker_lines(spec.callbacks, out, spec.name, layout.is_uri(out)):
            stderr_line(line)
        if plan.resume:
            drop_orphan_runs(spec, out)
        if plan.restart_errored:
            drop_errored_runs(spec, out)
        data = put_datasets(spec)  # each distinct dataset once for the whole sweep, not once per trial
        tuner = (
            restore_tuner(spec, out, keep_gpus, data, restart_errored=plan.restart_errored)
            if plan.resume
            else build_tuner(spec, out, keep_gpus, verbose=verbose, data=data)
        )
        grid = tuner.fit()
        lease.check_held()  # taken over while this driver stalled: the results are the other driver's now
        rows = rows_from_results(spec, grid)
        if interrupted(spec, rows):
            mark_interrupted(spec, rows)
        settle_runs(out, rows)
        write_trials(out, rows)
        if not interrupted(spec, rows):  # an interrupted sweep keeps its parts: its --resume appends more
            compacted = compact(out)
            stderr_line(f"sweep {spec.name}: compacted {compacted.summary()}")
        for line in summary_lines(spec, rows, out, resume=plan.resume_command()):
            echo(line)
        return rows
    finally:
        # every session counts in the sweep's CPU capacity, an interrupted one too (its figures are then
        # those of the trials so far; a --resume recomputes them from every trial)
        sessions = [*earlier, session(began, time.perf_counter() - t0, cores)]
        summary = summarise(out, rows or [], sessions, lambda: sweep_cycles(out))
        if rows is not None:
            for line in efficiency_lines(summary):
                echo(line)
        if started:
            stop_ray()
