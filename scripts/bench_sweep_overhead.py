#!/usr/bin/env python3
"""Driver overhead per trial of a sweep of many tiny trials, and the bytes of experiment state it writes.

Each size runs one ``colt-ray sweep`` in this process (``plan_sweep`` + ``run_sweep``, a fresh local Ray)
over a space made here: digits, conv2, COLT with one shard, 1 epoch, 6 cycles, ``backend: local``, one CPU
per trial, as many trials at once as the machine has cores, TPE over ``prune_rate`` and ``lr``. Printed per
size:

* **overhead / trial** (the issue's figure) = (wall x cores - training CPU-s - start-up x cores) / trials.
  Training CPU-s are the ``training`` part of ``sweep_summary.json`` (the ``cpu_seconds`` of every training
  row). Start-up is the wall time from the command's start until ``Tuner.fit`` is entered (Ray's start-up,
  the checks, building the Tuner). On a machine shared with other work this figure counts their CPU too.
* **cpu overhead / trial** = (CPU-s used by this process and all its descendants - training CPU-s - the
  CPU-s used before ``Tuner.fit``) / trials: the same question asked of the CPU this sweep used, so it does
  not count other users of the machine. The process tree is sampled every 0.25 s (a process's CPU time is
  the largest value seen for it; the last <= 0.25 s of a process that ends between samples is missed).
  Another ``colt-ray sweep`` started without ``--address`` on the same machine joins any running Ray, this
  one too (``cluster._running_cluster``): its trials would then count here, so run this on a quiet machine.
* **snapshots**: how many times Tune saved its experiment state (``TuneController.save_to_dir`` is wrapped:
  exact), and the bytes it wrote in all (the sizes of the ``experiment_state-*.json``, ``searcher-state-*``
  and callback state files right after each save, summed over saves); the last experiment_state and
  searcher-state sizes. Tune then copies the staged files to storage: locally the same bytes once more,
  not counted.

    python scripts/bench_sweep_overhead.py --trials 20 200 1000
    python scripts/bench_sweep_overhead.py --smoke-test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any, Optional

import yaml

STATE_PREFIXES = ("experiment_state-", "searcher-state-", "callback-states-")


def tiny_space(name: str, trials: int, cycles: int, concurrent: int) -> dict[str, Any]:
    """A space whose trials take a few seconds: what grows with the sweep is the overhead, not training."""
    return {
        "name": name,
        "fixed": {
            "dataset": "digits",
            "arch": "conv2",
            "method": "colt",
            "shards": 1,
            "epochs": 1,
            "cycles": cycles,
            "val_fraction": 0.1,
            "backend": "local",
            "cpus_per_shard": 1,
        },
        "search": {"prune_rate": {"float": [0.1, 0.4]}, "lr": {"logfloat": [0.02, 0.2]}},
        "objectives": [{"metric": "val_acc", "mode": "max"}],
        "budget": {"num_samples": trials, "max_concurrent": concurrent, "max_failures": 0},
        "sampler": {"kind": "tpe", "seed": 0},
    }


class SnapshotCounter:
    """Wraps ``TuneController.save_to_dir``: counts Tune's experiment snapshots and the bytes they stage."""

    def __init__(self) -> None:
        self.saves, self.bytes, self.last = 0, 0, {}

    def install(self) -> None:
        from ray.tune.execution.tune_controller import TuneController

        original, counter = TuneController.save_to_dir, self

        def save_to_dir(controller: Any) -> None:
            original(controller)
            counter.record(controller._storage.experiment_driver_staging_path)

        TuneController.save_to_dir = save_to_dir
        self.uninstall = lambda: setattr(TuneController, "save_to_dir", original)

    def record(self, staging: str) -> None:
        self.saves += 1
        for name in os.listdir(staging):
            if name.startswith(STATE_PREFIXES):
                size = os.path.getsize(os.path.join(staging, name))
                self.bytes += size
                self.last[name.split("-")[0]] = size


class TreeCpu:
    """CPU seconds of this process and its descendants, sampled in a thread (max seen per process)."""

    def __init__(self, period: float = 0.25) -> None:
        import psutil

        self._psutil, self._period = psutil, period
        self._seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = self._psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                key = (p.pid, p.create_time())
            except self._psutil.Error:
                continue
            self._seen[key] = max(self._seen.get(key, 0.0), t.user + t.system)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._sample()

    def total(self) -> float:
        self._sample()
        return sum(self._seen.values())

    def __enter__(self) -> TreeCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def mark_fit_start(marks: dict[str, float], cpu: TreeCpu) -> Any:
    """Wrap ``Tuner.fit`` to note when (and after how much CPU) the sweep proper begins and ends; returns
    the function that unwraps it."""
    from ray.tune import Tuner

    original = Tuner.fit

    def fit(tuner: Any) -> Any:
        marks["fit_start"], marks["fit_start_cpu"] = time.perf_counter(), cpu.total()
        try:
            return original(tuner)
        finally:
            marks["fit_end"] = time.perf_counter()

    Tuner.fit = fit
    return lambda: setattr(Tuner, "fit", original)


def run_one(trials: int, cycles: int, concurrent: int, root: str) -> dict[str, Any]:
    """One sweep of ``trials`` tiny trials under ``root``; its figures."""
    from colt_ray.parallel.sweep.driver import plan_sweep, run_sweep

    name = f"tiny{trials}"
    space = os.path.join(root, f"{name}.yaml")
    with open(space, "w", encoding="utf-8") as fh:
        yaml.safe_dump(tiny_space(name, trials, cycles, concurrent), fh)
    snaps, marks = SnapshotCounter(), {}
    snaps.install()
    with TreeCpu() as cpu:
        unwrap = mark_fit_start(marks, cpu)
        try:
            t0, began = time.perf_counter(), dt.datetime.now(dt.timezone.utc)
            plan = plan_sweep(space, storage=os.path.join(root, "st"))
            rows = run_sweep(plan, address="local", echo=lambda line: None, verbose=0, since=(began, t0))
            wall, tree_cpu = time.perf_counter() - t0, cpu.total()
        finally:
            unwrap()
            snaps.uninstall()
    with open(os.path.join(plan.out, "sweep_summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    return figures(trials, rows, summary, wall, tree_cpu, marks, snaps, t0)


def figures(
    trials: int,
    rows: list[dict],
    summary: dict,
    wall: float,
    tree_cpu: float,
    marks: dict[str, float],
    snaps: SnapshotCounter,
    t0: float,
) -> dict[str, Any]:
    cores, training = summary["cores"], summary["parts_cpu_seconds"]["training"]
    startup = marks["fit_start"] - t0
    return {
        "trials": trials,
        "completed": sum(r["status"] == "completed" for r in rows),
        "cores": cores,
        "wall_s": round(wall, 1),
        "startup_s": round(startup, 1),
        "fit_wall_s": round(marks["fit_end"] - marks["fit_start"], 1),
        "training_cpu_s": round(training, 1),
        "overhead_per_trial_s": round((wall * cores - training - startup * cores) / trials, 3),
        "tree_cpu_s": round(tree_cpu, 1),
        "cpu_overhead_per_trial_s": round((tree_cpu - training - marks["fit_start_cpu"]) / trials, 3),
        "results_and_checkpoints_share": round(
            summary["parts_cpu_seconds"]["results and checkpoints"] / summary["capacity_cpu_seconds"], 4
        ),
        "snapshots": snaps.saves,
        "snapshot_bytes_total": snaps.bytes,
        "last_experiment_state_bytes": snaps.last.get("experiment_state"),
        "last_searcher_state_bytes": snaps.last.get("searcher"),
    }


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, nargs="+", default=[20, 200, 1000], help="sweep sizes to run")
    p.add_argument("--cycles", type=int, default=6, help="pruning cycles per trial")
    p.add_argument("--concurrent", type=int, default=os.cpu_count() or 1, help="trials at once (1 CPU each)")
    p.add_argument("--root", default=None, help="where the sweeps are written (default: a temporary directory)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--smoke-test", action="store_true", help="one sweep of 3 trials of 1 cycle")
    args = p.parse_args(argv)
    if min(args.trials) < 1 or args.cycles < 1 or args.concurrent < 1:
        p.error("--trials, --cycles and --concurrent must be at least 1")  # exit status 2
    if args.smoke_test:
        args.trials, args.cycles = [3], 1
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for n in args.trials:
            root = os.path.join(args.root or tmp, f"n{n}")
            os.makedirs(root, exist_ok=True)
            results.append(run_one(n, args.cycles, args.concurrent, root))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    print_table(results)
    return 0


def print_table(results: list[dict[str, Any]]) -> None:
    cols = [
        ("trials", "trials"),
        ("wall_s", "wall s"),
        ("overhead_per_trial_s", "overhead/trial CPU-s"),
        ("cpu_overhead_per_trial_s", "measured CPU overhead/trial"),
        ("snapshots", "snapshots"),
        ("snapshot_bytes_total", "snapshot bytes"),
        ("last_experiment_state_bytes", "last experiment_state B"),
        ("last_searcher_state_bytes", "last searcher-state B"),
    ]
    print(" | ".join(title for _, title in cols))
    for r in results:
        print(" | ".join(str(r.get(key)) for key, _ in cols))


if __name__ == "__main__":
    sys.exit(main())
