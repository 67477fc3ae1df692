"""Batched against local shard training: per-cycle mask Jaccard and ticket accuracy (docs/batched.md, Exactness).

For each architecture and float dtype, COLT runs twice from the same theta_0 (digits, 2 class shards, 1 epoch
per training, CPU: the config of ``tests/test_batched.py``): once with the local backend's shard trainings,
once with ``BatchedShards`` (``--control``: the local backend again, with oneDNN's kernels switched off);
tickets are evaluated by the local backend both times. Each row gives, per cycle, the lowest per-layer
Jaccard of the two masks and the ticket accuracies' difference in points. ``float64``: models, buffers,
optimizer state and inputs in float64 (torch's default dtype for the run).

    python scripts/batched_equivalence.py --smoke-test
    python scripts/batched_equivalence.py                  # lenet300, conv2, resnet20; float64 and float32
    python scripts/batched_equivalence.py --archs resnet20 --dtypes float32 --control
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time

import torch

from colt_ray.core.config import DataConfig, RecipeConfig, RunConfig, TicketConfig
from colt_ray.core.tickets.batched import BatchedShards, masks_jaccard
from colt_ray.core.tickets.methods import Backend
from colt_ray.core.tickets.search import LocalBackend, prepare, run_method


def config(arch: str, cycles: int) -> RunConfig:
    """The compared run: digits, 2 class shards, 1 epoch per training at batch 64 and lr 0.05, on the CPU."""
    return RunConfig(
        data=DataConfig(dataset="digits"),
        recipe=RecipeConfig(epochs=1, batch_size=64, lr=0.05),
        ticket=TicketConfig(shards=2, cycles=cycles),
    ).replace(
        model=dataclasses.replace(RunConfig().model, arch=arch),
        resources=dataclasses.replace(RunConfig().resources, progress=False, device="cpu"),
    )


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Models, theta_0 and preprocessed batches made inside are ``dtype`` (``Preprocess`` follows the default)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def compare(cfg: RunConfig, control: bool = False) -> tuple[list[float], list[float]]:
    """The run with local shard trainings, then with batched ones (``control``: local with oneDNN off), in torch's
    default dtype; per cycle the lowest per-layer Jaccard of the masks and the ticket accuracy difference."""
    prepared = prepare(cfg)
    default = torch.empty(0).numpy().dtype  # theta_0 and every model loading it are in the default dtype
    assert {v.dtype for v in prepared.ctx.theta0.values() if v.dtype.kind == "f"} == {default}
    local = LocalBackend(prepared)
    first, second = [], []
    run_method(prepared, local.callables(), first.append)
    if control:
        other = LocalBackend(prepared)

        def shards(theta, mask, cycle, stop=None):
            torch.backends.mkldnn.enabled = False
            try:
                return other.train_shards(theta, mask, cycle)
            finally:
                torch.backends.mkldnn.enabled = True
    else:
        shards = BatchedShards.from_prepared(prepared).train_shards
    run_method(prepared, Backend(shards, None, local.evaluate), second.append)
    jac = [min(masks_jaccard(a.mask.to_numpy(), b.mask.to_numpy()).values()) for a, b in zip(first, second)]
    acc = [abs(a.cycle_rows[0]["acc_best"] - b.cycle_rows[0]["acc_best"]) for a, b in zip(first, second)]
    return jac, acc


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="lenet300,conv2,resnet20")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--control", action="store_true", help="local with oneDNN off in place of batched")
    p.add_argument("--smoke-test", action="store_true", help="lenet300, float64, 1 cycle: about a second")
    a = p.parse_args(argv)
    if a.smoke_test:
        a.archs, a.dtypes, a.cycles = "lenet300", "float64", 1
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(1)
    other = "local, oneDNN off" if a.control else "batched"
    print(f"local against {other}; per cycle: lowest per-layer mask Jaccard / ticket accuracy difference (points)")
    print("| arch | dtype | " + " | ".join(f"cycle {c}" for c in range(a.cycles + 1)) + " | seconds |")
    print("| --- | --- |" + " --- |" * (a.cycles + 2))
    for arch in a.archs.split(","):
        for name in a.dtypes.split(","):
            start = time.perf_counter()
            with default_dtype(getattr(torch, name)):
                jac, acc = compare(config(arch, a.cycles), a.control)
            cells = " | ".join(f"{j:.4f} / {100 * d:.1f}" for j, d in zip(jac, acc))
            print(f"| {arch} | {name} | {cells} | {time.perf_counter() - start:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
