"""Benchmark of the core: masked vs plain training step, and COLT vs IMP to 80% / 90% sparsity.

    python scripts/bench_core.py                 # full run (a few minutes on 2 CPU cores)
    python scripts/bench_core.py --smoke-test    # seconds; what CI runs

Part 1 times the training step the library uses (``colt_ray.core.train.train_step``: forward, backward,
gradient masking, optimizer step, weight masking) against a plain PyTorch step on the same model and batch,
interleaving the two in blocks and comparing medians. Part 2 runs COLT (k=2, p=0.15, class split) and IMP
(p=0.20) until 90% sparsity and reports, for 80% and 90%: rounds, training sample-epochs spent on the search
(shard trainings for COLT, level trainings for IMP; COLT's per-cycle ticket evaluations are reported apart),
and ticket accuracy at the first round at or past that sparsity, next to the dense accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from colt_ray.core.config import (
    DataConfig,
    ModelConfig,
    PruneConfig,
    RecipeConfig,
    ResourcesConfig,
    RunConfig,
    TicketConfig,
)
from colt_ray.core.models import build_model, prunable_names
from colt_ray.core.pruning import Mask, magnitude_scores, prune
from colt_ray.core.tickets.search import prepare, run_local
from colt_ray.core.train import MaskApplier, make_optimizer, train_step

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist10k.npz"


def plain_step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def time_steps(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def bench_step(arch: str, in_shape, batch: int, blocks: int, steps: int) -> dict:
    """Median seconds per step, masked (80% sparse) vs plain, same model, optimizer and batch."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, *in_shape), torch.randint(0, 10, (batch,))
    recipe = RecipeConfig(lr=0.01)
    plain = build_model(arch, in_shape, 10, seed=0)
    masked = build_model(arch, in_shape, 10, seed=0)
    names = prunable_names(masked, ("conv", "linear"))
    weights = {n: p for n, p in masked.named_parameters() if n in names}
    mask = prune(magnitude_scores(weights), Mask.ones_like(weights), 0.8)
    applier = MaskApplier(masked, mask, torch.device("cpu"))
    applier.apply_to_weights()
    opt_p, opt_m = make_optimizer(plain.parameters(), recipe), make_optimizer(masked.parameters(), recipe)
    loss_fn = lambda logits, t, _x: F.cross_entropy(logits, t)
    run_plain = lambda: plain_step(plain, opt_p, x, y)
    run_masked = lambda: train_step(masked, opt_m, applier, loss_fn, x, y)
    for fn in (run_plain, run_masked):
        time_steps(fn, 3)  # warm-up
    t_plain, t_masked = [], []
    for _ in range(blocks):
        t_plain.append(time_steps(run_plain, steps))
        t_masked.append(time_steps(run_masked, steps))
    p, m = statistics.median(t_plain), statistics.median(t_masked)
    return {"arch": arch, "batch": batch, "plain_ms": 1e3 * p, "masked_ms": 1e3 * m, "ratio": m / p}


def search(cfg: RunConfig) -> list[dict]:
    rows = []

    def sink(record):
        t = record.ticket_row
        shard_cost = sum(r["sample_epochs"] for r in record.cycle_rows if r["shard"] is not None)
        search_cost = shard_cost if cfg.ticket.method == "colt" else t["sample_epochs"]
        eval_cost = t["sample_epochs"] if cfg.ticket.method == "colt" else 0
        rows.append(
            {
                "round": record.cycle,
                "sparsity": t["sparsity"],
                "acc": t["acc_best"],
                "search": search_cost,
                "eval": eval_cost,
                "overlap": t["overlap"],
            }
        )

    run_local(prepare(cfg), sink)
    return rows


def summarise(name: str, rows: list[dict], targets=(0.8, 0.9)) -> list[str]:
    """Per target: first round at/after it, cumulative search sample-epochs *before* that round's ticket
    existed (the trainings whose masks formed it), its accuracy; plus the dense accuracy."""
    out = [f"  {name}: dense acc {rows[0]['acc']:.4f}"]
    for target in targets:
        hit = next((r for r in rows if r["sparsity"] >= target), None)
        if hit is None:
            out.append(f"    {target:.0%}: not reached (max sparsity {rows[-1]['sparsity']:.4f})")
            continue
        cost = sum(r["search"] for r in rows if r["round"] < hit["round"])
        out.append(
            f"    {target:.0%}: round {hit['round']} (sparsity {hit['sparsity']:.4f}), search sample-epochs {cost:,}, "
            f"ticket acc {hit['acc']:.4f} (dense - ticket = {rows[0]['acc'] - hit['acc']:+.4f})"
        )
    return out


def compare(label: str, data: DataConfig, arch: str, recipe: RecipeConfig, threads: int, target: float) -> list[str]:
    res = ResourcesConfig(backend="local", threads=threads, progress=False)
    base = RunConfig(data=data, model=ModelConfig(arch=arch), recipe=recipe, resources=res)
    colt = base.replace(
        ticket=TicketConfig(method="colt", shards=2, split="class", target_sparsity=target),
        prune=PruneConfig(rate=0.15),
    )
    imp = base.replace(ticket=TicketConfig(method="imp", target_sparsity=target), prune=PruneConfig(rate=0.20))
    lines = [f"{label} ({arch}, {recipe.epochs} epochs/training, lr {recipe.lr}, batch {recipe.batch_size})"]
    for name, cfg in (("COLT k=2 p=0.15", colt), ("IMP p=0.20", imp)):
        start = time.perf_counter()
        rows = search(cfg)
        lines += summarise(name, rows)
        curve = ", ".join(f"{r['sparsity']:.3f}:{r['acc']:.3f}" for r in rows)
        lines.append(f"    curve sparsity:acc = {curve}")
        if name.startswith("COLT"):
            ov = [f"{r['overlap']:.3f}" for r in rows if r["overlap"] is not None]
            lines.append(
                f"    shard-mask Jaccard per cycle = {', '.join(ov)}; "
                f"ticket-evaluation sample-epochs (extra) = {sum(r['eval'] for r in rows):,}"
            )
        lines.append(f"    wall {time.perf_counter() - start:.1f} s")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke-test", action="store_true", help="tiny sizes, seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per training in part 2")
    ap.add_argument("--mnist", default=str(MNIST), help="path of mnist10k.npz")
    ap.add_argument("--only", choices=("step", "search"), default=None, help="run one part only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}, "
        f"python {sys.version.split()[0]}"
    )
    if args.only != "search":
        part_step(args.smoke_test)
    if args.only != "step":
        part_search(args)
    return 0


def part_step(smoke: bool) -> None:
    print("== part 1: masked vs plain training step (median of blocks) ==")
    blocks, steps = (2, 3) if smoke else (15, 20)
    for arch, shape, batch in (
        ("lenet300", (1, 28, 28), 128),
        ("conv4", (3, 32, 32), 64),
        ("resnet20", (3, 32, 32), 64),
    ):
        r = bench_step(arch, shape, batch, blocks, steps)
        print(
            f"{r['arch']:9s} batch {r['batch']:4d}: plain {r['plain_ms']:.2f} ms, "
            f"masked {r['masked_ms']:.2f} ms, ratio {r['ratio']:.3f}",
            flush=True,
        )


def part_search(args) -> None:
    print("== part 2: COLT vs IMP to 80% / 90% sparsity ==")
    epochs = 1 if args.smoke_test else args.epochs
    target = 0.3 if args.smoke_test else 0.9
    jobs = [("digits", DataConfig(dataset="digits"), "conv2", RecipeConfig(epochs=epochs * 2, lr=0.05))]
    if Path(args.mnist).exists() and not args.smoke_test:
        jobs.insert(
            0,
            (
                "mnist10k",
                DataConfig(dataset="npz", data_root=args.mnist),
                "lenet300",
                RecipeConfig(epochs=epochs, lr=0.05, batch_size=64),
            ),
        )
    elif not args.smoke_test:
        print(f"(skipping mnist10k: {args.mnist} not found)")
    for label, data, arch, recipe in jobs:
        if args.smoke_test:
            recipe = dataclasses.replace(recipe, epochs=1)
        for line in compare(label, data, arch, recipe, args.threads, target):
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
