"""Synthetic sweep results, written by the project's own writer (no training): the scale benchmark's input.

``write_sweep(out, runs, cycles)`` writes what a sweep of ``runs`` trials of ``cycles`` cycles leaves in its
directory: one RUNS part per run, one CYCLES part (k shard rows + the ticket row) and one LAYERS part per
(run, cycle), and ``trials.parquet``: recipes of 3 seeds each, half COLT, half IMP, each with its own
learning rate, so that the report has every table to compute. Values are random but plausible (sparsity
grows each cycle, accuracy falls slowly). Deterministic from ``seed``.

    python scripts/synthetic_results.py OUT --runs 600 --cycles 20 [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
LAYERS = [("fc1.weight", 235200), ("fc2.weight", 30000), ("fc3.weight", 1000)]
SWEEP = "synthetic"


def run_ids(runs: int) -> list[str]:
    return [f"{i:012x}-t{i:05d}" for i in range(runs)]


def _config(i: int) -> dict:
    """Run ``i``: recipe ``i // 3`` (its own learning rate, COLT or IMP by turns) with seed ``i % 3``, as a
    ``compare: [colt, imp]`` sweep over 3 seeds would make."""
    from colt_ray.core.config import RunConfig

    recipe = i // 3
    flat = RunConfig().to_flat()
    method = "colt" if recipe % 2 == 0 else "imp"
    lr = round(0.02 + 0.18 * ((recipe * 0.6180339887) % 1.0), 6)
    flat.update(method=method, dataset="mnist", arch="lenet300", lr=lr, seed=i % 3)
    flat.update(val_fraction=0.1, target_sparsity=0.9)
    if method == "colt":
        flat.update(shards=2)
    return flat


def _write_runs(out: str, ids: list[int], runs: int, cycles: int, seed: int) -> None:
    from colt_ray.results.writer import ResultsWriter

    # the writer fsyncs every part (durability for real runs); a synthetic sweep of 250,000 parts needs the
    # same files, not their durability, so this process skips the fsyncs (each file is still written to a
    # temporary name and renamed, exactly as in a sweep)
    os.fsync = lambda fd: None

    w = ResultsWriter(out)
    names = run_ids(runs)
    for i in ids:
        rng = np.random.default_rng([seed, i])
        flat, run_id = _config(i), names[i]
        shards = flat.get("shards", 2) if flat["method"] == "colt" else 0
        rate = 0.2 if flat["method"] == "imp" else 0.3
        dense = 0.97 + 0.01 * rng.standard_normal()
        w.write_run({"run_id": run_id, **flat, "status": "running", "started_at": T0, "sweep": SWEEP,
                     "trial_id": f"t{i:05d}", "num_classes": 10, "dense_acc": dense})  # fmt: skip
        for c in range(cycles + 1):
            sparsity = 1 - (1 - rate) ** c
            acc = float(np.clip(dense - 0.04 * sparsity**4 + 0.005 * rng.standard_normal(), 0, 1))
            rows = [_row(c, s, sparsity, acc, rng) for s in range(shards)] + [_row(c, None, sparsity, acc, rng)]
            layer_rows = [
                {"layer": name, "group": name, "numel": n, "kept": int(n * (1 - sparsity)), "density": 1 - sparsity,
                 "overlap": None if not shards else float(rng.uniform(0.8, 1))}
                for name, n in LAYERS
            ]  # fmt: skip
            w.write_cycle(run_id, c, rows, layer_rows)
        w.write_run({"run_id": run_id, **flat, "status": "completed", "started_at": T0, "finished_at": T0,
                     "sweep": SWEEP, "trial_id": f"t{i:05d}", "num_classes": 10, "dense_acc": dense,
                     "cycles_done": cycles, "final_sparsity": 1 - (1 - rate) ** cycles})  # fmt: skip


def _row(cycle: int, shard: Optional[int], sparsity: float, acc: float, rng: np.random.Generator) -> dict:
    total = 266200
    return {
        "cycle": cycle, "shard": shard, "sparsity": sparsity, "kept_weights": int(total * (1 - sparsity)),
        "prunable_weights": total, "evaluated": True, "acc_best": acc, "acc_final": acc - 0.002,
        "val_acc_best": acc + 0.003 * rng.standard_normal(), "test_acc_at_best_val": acc, "loss": 0.1,
        "overlap": None if shard is None else float(rng.uniform(0.8, 1)), "sample_epochs": 8000 * (cycle + 1),
        "wall_seconds": 1.0, "cpu_seconds": 1.0, "finished_at": T0,
    }  # fmt: skip


def write_sweep(out: str, runs: int, cycles: int, seed: int = 0, workers: int = 1) -> None:
    """Write a synthetic sweep of ``runs`` x ``cycles`` into ``out`` (local path or URI)."""
    from colt_ray.results.writer import ResultsWriter

    chunks = [list(range(w, runs, workers)) for w in range(workers)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_runs, [out] * workers, chunks, [runs] * workers, [cycles] * workers, [seed] * workers))
    else:
        _write_runs(out, chunks[0], runs, cycles, seed)
    trials = [
        {"sweep": SWEEP, "trial_id": f"t{i:05d}", "run_id": rid, "status": "completed", "stopped_early": False,
         "config_json": json.dumps(_config(i), sort_keys=True), "cycles_done": cycles}
        for i, rid in enumerate(run_ids(runs))
    ]  # fmt: skip
    ResultsWriter(out).write_trials(trials)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    write_sweep(args.out, args.runs, args.cycles, args.seed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
