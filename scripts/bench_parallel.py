"""End-to-end speed of the Ray backend, as a user runs it: whole `colt-ray ticket` processes, timed from start
to exit, both sides alternating in one script run; medians and ratios printed.

Three comparisons (docs: benchmarks/RESULTS.md):

* ``ray-vs-local``: COLT k=2 with every ticket evaluated (``--eval-tickets all``), ``--backend ray`` vs
  ``--backend local``; goal >= 1.5x on 2 CPUs.
* ``colt-vs-imp``: wall time to a >= 90%-sparse ticket, COLT (ray, k=2, ``--eval-tickets final``) vs IMP
  (local, p = 0.2); goal <= 0.5x; both tickets' test accuracy printed.
* ``fixed-cost``: a tiny run (digits, 1 cycle, 1 epoch, ``--eval-tickets none``) on ray vs local: the seconds
  Ray adds to every run; goal <= 3 s.

Every run writes to a fresh temporary directory; results of the two backends are checked to hold the same
masks (ticket files) and the same ticket accuracies.

    python scripts/bench_parallel.py --data-root ../shared/data/mnist10k.npz   # LeNet-300-100 on mnist10k
    python scripts/bench_parallel.py --smoke-test                                # seconds, digits
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

COLT_RAY = [sys.executable, "-m", "colt_ray"]


def ticket(args: list[str], out: str) -> float:
    """Run one `colt-ray ticket` process; its wall time in seconds (raises on failure)."""
    start = time.perf_counter()
    proc = subprocess.run(COLT_RAY + ["ticket", *args, "--no-progress", "--out", out], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"colt-ray ticket {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall


def summary(out: str) -> dict:
    """The run's last ticket: cycles, sparsity, test accuracy, and its masks (for the equality check)."""
    import pandas as pd

    from colt_ray.core.tickets.io import load_ticket

    runs = pd.read_parquet(Path(out) / "runs")
    cycles = pd.read_parquet(Path(out) / "cycles")
    tickets = cycles[cycles.shard.isna()].sort_values("cycle")
    last = tickets.iloc[-1]
    files = sorted((Path(out) / "tickets").rglob("cycle-*.safetensors"))
    return {
        "cycles": int(last.cycle),
        "sparsity": float(last.sparsity),
        "acc": last.acc_best,
        "accs": [None if pd.isna(a) else round(float(a), 6) for a in tickets.acc_best],
        "masks": [load_ticket(f).mask for f in files],
        "wall_run": float(runs.wall_seconds.iloc[0]),
    }


def compare(
    name: str, a_args: list[str], b_args: list[str], repeats: int, labels: tuple[str, str], same_results: bool
) -> dict:
    """Time A and B alternately ``repeats`` times each; print medians, the ratio B/A and the results."""
    walls: dict[str, list[float]] = {labels[0]: [], labels[1]: []}
    last: dict[str, dict] = {}
    for i in range(repeats):
        order = [(labels[0], a_args), (labels[1], b_args)]
        for label, args in order if i % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory(prefix="bench-") as out:
                walls[label].append(ticket(args, out))
                last[label] = summary(out)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"\n== {name}")
    for label in labels:
        s = last[label]
        acc = "n/a" if s["acc"] is None or s["acc"] != s["acc"] else f"{s['acc']:.4f}"
        print(
            f"  {label:>6}: median {med[label]:7.2f} s  (runs: {', '.join(f'{w:.2f}' for w in walls[label])}); "
            f"{s['cycles']} rounds to sparsity {s['sparsity']:.4f}, test acc of that ticket {acc}"
        )
    if same_results:
        a, b = last[labels[0]], last[labels[1]]
        same = len(a["masks"]) == len(b["masks"]) and all(x == y for x, y in zip(a["masks"], b["masks"]))
        print(f"  masks identical: {same}; ticket accuracies equal: {a['accs'] == b['accs']}")
    return med


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="mnist10k-style .npz (default: digits with conv2)")
    p.add_argument("--repeats", type=int, default=3, help="runs per side (alternating)")
    p.add_argument("--cycles", type=int, default=8, help="COLT cycles of the ray-vs-local comparison")
    p.add_argument("--only", default="ray-vs-local,colt-vs-imp,fixed-cost", help="comma-separated parts")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes on digits: seconds per run")
    a = p.parse_args(argv)
    if a.data_root and not a.smoke_test:
        data = ["--dataset", "npz", "--data-root", a.data_root, "--arch", "lenet300"]
    else:
        data = ["--dataset", "digits", "--arch", "conv2"]
    extra = ["--epochs", "1"] if a.smoke_test else []
    cycles = "1" if a.smoke_test else str(a.cycles)
    repeats = 1 if a.smoke_test else a.repeats
    parts = a.only.split(",")
    print(f"machine: {sys.platform}, python {sys.version.split()[0]}; data: {' '.join(data)}; repeats {repeats}")
    if "ray-vs-local" in parts:
        colt = ["--method", "colt", "--shards", "2", "--cycles", cycles, "--eval-tickets", "all", *data, *extra]
        med = compare(
            "COLT k=2, --eval-tickets all: --backend local vs --backend ray",
            colt + ["--backend", "local"],
            colt + ["--backend", "ray"],
            repeats,
            ("local", "ray"),
            True,
        )
        print(f"  speed-up ray vs local: {med['local'] / med['ray']:.2f}x (goal >= 1.5x on 2 CPUs)")
    if "colt-vs-imp" in parts:
        target = "0.5" if a.smoke_test else "0.9"
        colt = [
            "--method",
            "colt",
            "--shards",
            "2",
            "--target-sparsity",
            target,
            "--eval-tickets",
            "final",
            "--backend",
            "ray",
            *data,
            *extra,
        ]
        imp = ["--method", "imp", "--target-sparsity", target, "--backend", "local", *data, *extra]
        med = compare(
            f"wall time to a >= {target} sparse ticket: IMP (local, p=0.2) vs COLT (ray, k=2, eval final)",
            imp,
            colt,
            repeats,
            ("imp", "colt"),
            False,
        )
        print(f"  COLT / IMP wall time: {med['colt'] / med['imp']:.2f}x (goal <= 0.5x)")
    if "fixed-cost" in parts:
        tiny = ["--dataset", "digits", "--arch", "conv2", "--cycles", "1", "--epochs", "1", "--eval-tickets", "none"]
        med = compare(
            "tiny run (digits, 1 cycle, 1 epoch, no evaluation): local vs ray",
            tiny + ["--backend", "local"],
            tiny + ["--backend", "ray"],
            max(repeats, 3) if not a.smoke_test else 1,
            ("local", "ray"),
            True,
        )
        print(f"  fixed cost of --backend ray: {med['ray'] - med['local']:.2f} s over local (goal <= 3 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
