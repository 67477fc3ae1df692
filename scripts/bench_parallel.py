"""Benchmark the Ray backend: speed-up of k concurrent shard trainers, and Ray's overhead at k=1.

Only COLT's shard trainings are timed (no ticket evaluation; actor start-up, data loading and each
process's first, warm-up training excluded), with one torch thread per training on both sides:

* speed-up: k shards through Ray (one actor each) vs the same k trainings one after another in one process;
* overhead: k=1 through Ray vs the local backend on the same work (goal <= 1.10).

The two sides are timed in alternation, cycle by cycle (order swapped every repeat), so that load from other
work on a shared machine hits both alike; the script also checks that both sides find bit-identical masks.
Example:
    python scripts/bench_parallel.py --dataset npz --data-root ../shared/data/mnist10k.npz --arch lenet300
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable, Optional, Sequence

import ray
import torch

from colt_ray.core.config import RunConfig
from colt_ray.core.pruning import Mask, vote
from colt_ray.core.tickets.search import LocalBackend, prepare
from colt_ray.parallel.coordinator import Coordinator
from colt_ray.parallel.resources import fit_to_cluster


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="npz", help="dataset name (digits needs no file)")
    p.add_argument("--data-root", default="../shared/data/mnist10k.npz", help="dataset file/directory")
    p.add_argument("--arch", default="lenet300")
    p.add_argument("--shards", type=int, default=2, help="k for the speed-up measurement")
    p.add_argument("--cycles", type=int, default=3, help="COLT cycles with shard training")
    p.add_argument("--epochs", type=int, default=10, help="epochs per shard training")
    p.add_argument("--repeats", type=int, default=2, help="timings of each cycle per side")
    p.add_argument("--cpus", type=int, default=2, help="num_cpus of the local Ray")
    p.add_argument("--worker-niceness", type=int, default=0,
                   help="nice level of Ray's worker processes (Ray's default is 15); 0 = the driver's, so both "
                   "sides compete alike with other load on the machine")
    p.add_argument("--smoke-test", action="store_true", help="tiny run on digits (seconds of training)")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.dataset, args.data_root, args.arch = "digits", None, "conv2"
        args.epochs, args.cycles, args.repeats = 1, 1, 1
    args.calibration = 300 if args.smoke_test else 3000  # 256x256 matmuls per process in machine_ceiling
    return args


def make_cfg(args: argparse.Namespace, shards: int) -> RunConfig:
    flat = {
        "dataset": args.dataset, "data_root": args.data_root, "arch": args.arch, "epochs": args.epochs,
        "method": "colt", "shards": shards, "split": "class", "cycles": args.cycles, "eval_tickets": False,
        "seed": 0, "threads": 1, "progress": False, "backend": "ray",
    }
    return RunConfig.from_flat(flat)


def clock(fn: Callable, *args) -> tuple[float, list]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def compare(cfg: RunConfig, repeats: int) -> dict:
    """Time ``train_shards`` of both backends cycle by cycle on COLT's own sequence of masks."""
    prepared = prepare(cfg)
    theta, mask = prepared.ctx.theta0, prepared.ctx.ones()
    local = LocalBackend(prepared)
    totals, ratios, same = {"local": 0.0, "ray": 0.0}, [], True
    with Coordinator(fit_to_cluster(cfg, 0), prepared=prepared) as coord:
        coord.pool.ready()  # actors started and their shards loaded before any clock runs
        sides = {"local": local.train_shards, "ray": coord.train_shards}
        for fn in sides.values():
            fn(theta, mask, 0)  # warm-up: a fresh process's first training pays torch's one-off start-up
        for cycle in range(cfg.max_cycles):
            for r in range(repeats):
                order = ["local", "ray"] if r % 2 == 0 else ["ray", "local"]
                seconds, outs = {}, {}
                for side in order:
                    seconds[side], outs[side] = clock(sides[side], theta, mask, cycle)
                    totals[side] += seconds[side] / repeats
                ratios.append(seconds["local"] / seconds["ray"])
                same &= all(Mask.from_numpy(a.mask) == Mask.from_numpy(b.mask) for a, b in zip(outs["local"], outs["ray"]))
                print(f"  k={cfg.num_shards} cycle {cycle} repeat {r}: local {seconds['local']:.2f} s, "
                      f"ray {seconds['ray']:.2f} s; load {os.getloadavg()[0]:.1f}", flush=True)
            mask = vote([Mask.from_numpy(o.mask) for o in outs["local"]], cfg.vote)
    return {**totals, "median_ratio": statistics.median(ratios), "same_masks": same}


def _matmuls(n: int, out=None) -> float:
    torch.set_num_threads(1)
    a = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    for _ in range(n):
        a @ a
    seconds = time.perf_counter() - t
    if out is not None:
        out.put(seconds)
    return seconds


def machine_ceiling(k: int, n: int = 3000) -> float:
    """What the machine gives right now without Ray: k plain processes doing the same fixed single-threaded
    work at once vs one process doing it k times. About k on idle cores; lower when other work shares them."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    one = _one_process(ctx, lambda q: [ctx.Process(target=_matmuls, args=(n * k, q))])
    many = _one_process(ctx, lambda q: [ctx.Process(target=_matmuls, args=(n, q)) for _ in range(k)])
    return one / many


def _one_process(ctx, make) -> float:
    q = ctx.Queue()
    procs = make(q)
    for p in procs:
        p.start()
    seconds = max(q.get() for _ in procs)
    for p in procs:
        p.join()
    return seconds


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} CPUs, {mem:.0f} GiB, {'CUDA' if torch.cuda.is_available() else 'no GPU'}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run both measurements and print them; exit status 1 if the two sides' masks differ."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"workload: COLT {args.arch} on {args.dataset}, {args.cycles} cycles x {args.epochs} epochs per shard "
          f"training, 1 torch thread per training, {args.repeats} alternating timings per cycle, "
          f"Ray worker niceness {args.worker_niceness}")
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # read by the raylet that ray.init starts
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    try:
        ceiling = machine_ceiling(args.shards, args.calibration)
        print(f"machine ceiling before: {args.shards} plain processes at once (no Ray) are {ceiling:.2f}x as fast "
              "as one doing their work in turn")
        par = compare(make_cfg(args, args.shards), args.repeats)
        print(f"speed-up k={args.shards}: sequential {par['local']:.2f} s, ray {par['ray']:.2f} s -> "
              f"{par['local'] / par['ray']:.2f}x (median per cycle {par['median_ratio']:.2f}x; goal >= 1.8x); "
              f"masks identical: {par['same_masks']}")
        one = compare(make_cfg(args, 1), args.repeats)
        print(f"overhead k=1: local {one['local']:.2f} s, ray {one['ray']:.2f} s -> ratio "
              f"{one['ray'] / one['local']:.3f} (median per cycle {1 / one['median_ratio']:.3f}; goal <= 1.10); "
              f"masks identical: {one['same_masks']}")
        ceiling = machine_ceiling(args.shards, args.calibration)
        print(f"machine ceiling after: {ceiling:.2f}x; load average {os.getloadavg()[0]:.2f}")
    finally:
        ray.shutdown()
    return 0 if par["same_masks"] and one["same_masks"] else 1


if __name__ == "__main__":
    sys.exit(main())
