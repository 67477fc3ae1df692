#!/usr/bin/env python3
"""Where the fixed cost of ``--backend ray`` goes, part by part, each part measured both ways.

Each measurement runs in a fresh process (nothing warm). The two ways alternate, and the order swaps every
repeat. The script prints medians.

* **exit**: a process that imports what ``colt-ray`` loads (torch, pyarrow, pandas, Ray) and does one matmul.
  "plain" ends as Python ends. "ours" ends as the ``colt-ray`` command does (``colt_ray.cli.entry``: exit
  handlers, then ``os._exit``). Both are whole-process wall times.
* **ray.init**: ``ray.init`` of a local 2-CPU Ray, as ``colt_ray.parallel.cluster.init_ray`` starts it. "ours"
  also sets Ray's ``preload_python_modules``, so the workers import the trainers' module meanwhile.
* **actors**: right after that, two actors that import what a trainer actor imports
  (``colt_ray.parallel.actors``). The time runs from their creation to their first replies.
* **ray stop**: ``ray.shutdown()`` ("plain") against ``colt_ray.parallel.cluster.stop_ray()`` ("ours").

    python scripts/bench_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

EXIT_CHILD = """
import sys
import numpy, pandas, pyarrow, ray, torch
x = torch.randn(256, 256) @ torch.randn(256, 256)
if sys.argv[1] == "ours":
    import atexit, os
    atexit._run_exitfuncs()
    sys.stdout.flush()
    os._exit(0)
"""

RAY_CHILD = """
import json, logging, os, sys, time
ours = sys.argv[1] == "ours"
from colt_ray.parallel.cluster import PRELOAD, stop_ray
if ours:
    os.environ["RAY_preload_python_modules"] = PRELOAD
import ray
t0 = time.perf_counter()
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
t1 = time.perf_counter()

@ray.remote(num_cpus=1)
class Trainer:
    def __init__(self):
        import colt_ray.parallel.actors  # noqa: F401
    def ping(self):
        return os.getpid()

actors = [Trainer.remote() for _ in range(2)]
ray.get([a.ping.remote() for a in actors])
t2 = time.perf_counter()
(stop_ray if ours else ray.shutdown)()
t3 = time.perf_counter()
print(json.dumps({"ray.init": t1 - t0, "actors": t2 - t1, "ray stop": t3 - t2}))
"""


def run_exit(way: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", EXIT_CHILD, way], check=True)
    return {"exit (whole process)": time.perf_counter() - t0}


def run_ray(way: str) -> dict:
    out = subprocess.run([sys.executable, "-c", RAY_CHILD, way], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="measurements per way and part (alternating)")
    a = p.parse_args(argv)
    times: dict[str, dict[str, list[float]]] = {}
    for r in range(a.repeats):
        ways = ("plain", "ours") if r % 2 == 0 else ("ours", "plain")
        for way in ways:
            for part, seconds in {**run_exit(way), **run_ray(way)}.items():
                times.setdefault(part, {}).setdefault(way, []).append(seconds)
    print(f"medians of {a.repeats} fresh processes per way, alternating")
    print(f"{'part':<22} {'plain':>8} {'ours':>8} {'saved':>8}")
    for part, t in times.items():
        plain, ours = statistics.median(t["plain"]), statistics.median(t["ours"])
        print(f"{part:<22} {plain:>7.2f}s {ours:>7.2f}s {plain - ours:>7.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
