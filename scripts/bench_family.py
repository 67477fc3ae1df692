"""Benchmark the lottery-ticket family: vanilla IMP vs IMP with retraining tweaks, and lottery jackpots vs
plain magnitude pruning of the same pre-trained weights vs IMP, at matched sparsities.

Every run goes through the ``colt-ray ticket`` command (``colt_ray.cli.main``), so it writes the usual
Parquet tables and ticket files under ``--out``. Per dataset/architecture:

* IMP (vanilla, with all tweaks, and at the last sparsity with one tweak at a time) reaches each target
  sparsity S in two levels of rate ``1 - sqrt(1 - S)``; the level-2 ticket is retrained from theta_0.
  Level 0 is the dense model (the tweaked run's own, with its activation and loss, is its teacher).
* The jackpot's dense model is IMP's level 0 (same seed and recipe, so the same weights); the first jackpot
  run trains it, the others load it from that run's cycle-0 ticket with ``--pretrained``. "magnitude" is
  the same pipeline with zero search epochs: the magnitude mask of the pre-trained weights, no retraining.

    python scripts/bench_family.py                  # mnist10k (lenet300) + digits (conv2), ~10-15 min on 2 CPUs
    python scripts/bench_family.py --smoke-test     # seconds: digits only, one epoch
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from colt_ray.cli import build_parser, config_from_args
from colt_ray.cli import main as cli_main

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist10k.npz"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--smoke-test", action="store_true", help="digits + lenet300 only, 1 epoch, 1 search epoch")
    p.add_argument("--mnist", default=str(MNIST.resolve()), help="mnist10k.npz (skipped if missing)")
    p.add_argument("--sparsities", default="0.8,0.9", help="target sparsities, comma-separated")
    p.add_argument("--epochs", type=int, default=5, help="epochs per training (IMP levels, dense pre-training)")
    p.add_argument("--search-epochs", type=int, default=5, help="jackpot score-training epochs")
    p.add_argument("--tweaks", default="label-smoothing,distill,density-rescale", help="tweaks of the tweaked IMP")
    p.add_argument("--activation", default="swish", help="activation of the tweaked IMP")
    p.add_argument(
        "--no-ablation",
        dest="ablation",
        action="store_false",
        help="skip the runs with one tweak at a time (at the last sparsity)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--out", default=None, help="results directory (default: a temporary one)")
    p.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    return p.parse_args(argv)


def setups(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(label, data/arch arguments) per benchmarked pair."""
    digits = ("digits / conv2", ["--dataset", "digits", "--arch", "conv2"])
    if args.smoke_test:
        return [("digits / lenet300", ["--dataset", "digits", "--arch", "lenet300"])]
    out = []
    if Path(args.mnist).is_file():
        out.append(("mnist10k / lenet300", ["--dataset", "npz", "--data-root", args.mnist, "--arch", "lenet300"]))
    else:
        print(f"bench_family: {args.mnist} not found, skipping mnist10k", file=sys.stderr)
    return out + [digits]


def ticket(argv: list[str], out: Path) -> pd.DataFrame:
    """Run ``colt-ray ticket argv``; return its ``cycles`` rows (merged ticket rows only), by cycle."""
    full = ["ticket", *argv, "--out", str(out), "--backend", "local", "--no-progress"]
    run_id = config_from_args(build_parser().parse_args(full)).run_id()
    with contextlib.redirect_stdout(io.StringIO()):  # keep the "done: ..." lines out of the table
        code = cli_main(full)
    if code != 0:
        raise SystemExit(f"bench_family: colt-ray {' '.join(full)} exited {code}")
    cycles = pd.read_parquet(out / "cycles")
    rows = cycles[(cycles.run_id == run_id) & cycles.shard.isna()].sort_values("cycle")
    return rows.assign(run_id=run_id)


def row(setup: str, method: str, r: pd.Series, rows: pd.DataFrame) -> dict:
    return {
        "setup": setup,
        "method": method,
        "sparsity": r.sparsity,
        "acc_best": r.acc_best,
        "acc_final": r.acc_final,
        "sample_epochs": int(rows.sample_epochs.sum()),
        "wall_s": float(rows.wall_seconds.sum()),
    }


def imp_variants(args: argparse.Namespace, ablation: bool) -> list[tuple[str, list[str]]]:
    """(label, extra arguments) of the IMP runs: vanilla, all tweaks, and (``ablation``) each tweak alone."""
    out = [("imp", []), ("imp+tweaks", ["--tweaks", args.tweaks, "--activation", args.activation])]
    if ablation:
        out += [(f"imp+{t}", ["--tweaks", t]) for t in args.tweaks.split(",") if t]
        if args.activation != "relu":
            out.append((f"imp+{args.activation}", ["--activation", args.activation]))
    return out


def bench_setup(setup: str, base: list[str], args: argparse.Namespace, out: Path) -> list[dict]:
    """All methods at every target sparsity for one dataset/architecture (tweak ablation at the last one)."""
    common = [*base, "--epochs", str(args.epochs), "--threads", str(args.threads)]
    sparsities = [float(x) for x in args.sparsities.split(",")]
    results, pretrained = [], None
    for s in sparsities:
        rate = f"{1 - math.sqrt(1 - s):.6f}"
        for name, extra in imp_variants(args, args.ablation and s == sparsities[-1]):
            rows = ticket([*common, "--method", "imp", "--prune-rate", rate, "--cycles", "2", *extra], out)
            if s == sparsities[0] and name in ("imp", "imp+tweaks"):
                results.append(row(setup, f"{name} dense (level 0)", rows.iloc[0], rows.iloc[:1]))
            results.append(row(setup, name, rows.iloc[-1], rows))
        for name, epochs in (("magnitude (no search)", 0), ("jackpot", args.search_epochs)):
            source = ["--pretrained", pretrained] if pretrained else []
            rows = ticket(
                [*common, "--method", "jackpot", "--target-sparsity", str(s), "--search-epochs", str(epochs), *source],
                out,
            )
            if pretrained is None:
                pretrained = str(next((out / "tickets" / rows.run_id.iloc[0]).glob("cycle-0000.safetensors")))
            results.append(row(setup, name, rows.iloc[-1], rows.iloc[-1:]))  # cost of the search only
    return results


def to_markdown(df: pd.DataFrame) -> str:
    cols = ["setup", "method", "sparsity", "acc_best", "acc_final", "sample_epochs", "wall_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        cells = [
            r.setup,
            r.method,
            f"{r.sparsity:.3f}",
            f"{r.acc_best:.4f}",
            f"{r.acc_final:.4f}",
            f"{r.sample_epochs:,}",
            f"{r.wall_s:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.smoke_test:
        args.epochs, args.search_epochs, args.sparsities = 1, 1, "0.9"
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_family-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        results = [r for label, base in setups(args) for r in bench_setup(label, base, args, out)]
    table = to_markdown(pd.DataFrame(results))
    machine = (
        f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    text = (
        f"{table}\n\nepochs {args.epochs}, search epochs {args.search_epochs}; {machine}; "
        f"total {time.perf_counter() - start:.0f} s"
    )
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
