"""The gap search's answer, timed as users run it: the best COLT and the best IMP setting a sweep found
(``colt-ray report``'s "best settings" command lines, chosen on validation), each run as a whole
``colt-ray ticket`` process for the same seeds, alternating COLT and IMP; medians and ratios printed.

Both run exactly as the report prints them, so on the default ``--backend auto``: COLT with k >= 2 shards on
Ray (shards and the ticket evaluation concurrently), IMP on the local backend (one model at a time). The
seeds default to 0 1 2, which the sweep (seeds 42 43 44) never ran: an out-of-sample check of its choice.
Per run: wall time of the whole process, rounds to the first ticket at or past the target, its validation
and test accuracy (test at the best-validation epoch).

    python scripts/bench_gap.py sweeps/colt_gap_mnist                 # seeds 0 1 2
    python scripts/bench_gap.py sweeps/colt_gap_mnist --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional


def best_commands(sweep: str) -> dict[str, list[str]]:
    """``{method: argv after 'colt-ray'}`` of the sweep's best settings (the report's rule)."""
    from colt_ray.results.reader import load_results
    from colt_ray.results.report import build_tables

    settings = build_tables(load_results(sweep))["best_settings"]
    out = {}
    for row in settings.itertuples(index=False):
        argv = shlex.split(row.command)[1:]
        i = argv.index("--out")
        del argv[i : i + 2]
        out[row.method] = argv  # no execution settings: --backend auto (COLT k >= 2: ray; IMP: local)
    return out


def run(argv: list[str], seed: int) -> dict:
    """One whole process; its wall time and the run's first ticket at or past the target."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="bench-gap-") as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "colt_ray", *argv, "--seed", str(seed), "--no-progress", "--out", out],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"colt-ray {shlex.join(argv)} failed:\n{proc.stderr[-3000:]}")
        runs = pd.read_parquet(Path(out) / "runs")
        cycles = pd.read_parquet(Path(out) / "cycles")
    target = float(runs["target_sparsity"].iloc[0])
    tickets = cycles[cycles["shard"].isna() & (cycles["sparsity"] >= target)].sort_values("cycle")
    t = tickets.iloc[0]
    return {
        "wall": wall,
        "rounds": int(t["cycle"]),
        "sparsity": float(t["sparsity"]),
        "val": float(t["val_acc_best"]),
        "test": float(t["test_acc_at_best_val"]),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="a gap sweep's directory (sweeps/colt_gap_mnist)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    cmds = best_commands(args.sweep)
    if not {"colt", "imp"} <= set(cmds):
        raise SystemExit("the sweep has no best setting for both colt and imp")
    for method, cmd in cmds.items():
        print(f"{method}: colt-ray {shlex.join(cmd)} --seed S")
    res: dict[str, list[dict]] = {"colt": [], "imp": []}
    for seed in args.seeds:
        for method in ("colt", "imp"):  # alternating, so drift in the machine's speed hits both
            r = run(cmds[method], seed)
            res[method].append(r)
            print(
                f"seed {seed} {method}: {r['wall']:.1f} s, {r['rounds']} rounds to {r['sparsity']:.4f}, "
                f"val {r['val']:.4f}, test {r['test']:.4f}",
                flush=True,
            )
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("wall", "rounds")} for m, rs in res.items()}
    for m, rs in res.items():
        tests = [r["test"] for r in rs]
        sd = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        print(
            f"{m}: median wall {med[m]['wall']:.1f} s, median rounds {med[m]['rounds']:g}, "
            f"test {statistics.mean(tests):.4f} ± {sd:.4f} (n={len(tests)})"
        )
    diff = statistics.mean(r["test"] for r in res["colt"]) - statistics.mean(r["test"] for r in res["imp"])
    print(f"COLT - IMP test accuracy: {100 * diff:+.2f} points (goal: >= -0.30)")
    print(f"wall time COLT / IMP (medians): {med['colt']['wall'] / med['imp']['wall']:.2f}x (goal <= 0.5x)")
    print(f"rounds COLT / IMP (medians): {med['colt']['rounds']:g} / {med['imp']['rounds']:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
