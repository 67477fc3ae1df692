"""Throughput of batched shard training (``BatchedShards``) against the same k shards trained one after another.

Torch only (no Ray). For each architecture and k, every shard gets ``--samples`` training samples of the
dataset (a different slice per shard) and its own fresh head; one cycle's ``train_shards`` is timed both
ways after a warm-up call, best of ``--repeats``. Throughput = shard-samples x epochs per second.

Columns: ``seq`` and ``batched`` throughput; ``batched/seq``; ``vs k x one``: batched throughput over k times
the throughput of a single shard trained alone (1.0: k shards in the time of one; the GPU goal is >= 0.8);
peak memory of the batched call
(CUDA: max allocated; CPU: the process's max RSS, which covers everything the process ever held).

    python scripts/bench_batched.py --smoke-test
    python scripts/bench_batched.py --archs lenet300,conv4,resnet20 --ks 1,2,4,8 --device cpu
    python scripts/bench_batched.py --device cuda --random-shape 3,32,32 --samples 2048 --batch-size 128

``--random-shape C,H,W`` trains on random images of that shape (10 classes) instead of a dataset: throughput
does not depend on the pixels, and a GPU machine needs no data files (CIFAR-10's shape above).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time

import numpy as np
import torch

from colt_ray.core.config import DataConfig, ModelConfig, RecipeConfig, ResourcesConfig, RunConfig, TicketConfig
from colt_ray.core.data import load_dataset
from colt_ray.core.tickets.batched import BatchedShards
from colt_ray.core.tickets.trainer import TicketTrainer, build_theta0, shard_head_seed


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="lenet300,conv4,resnet20")
    p.add_argument("--ks", default="1,2,4,8")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default=None)
    p.add_argument("--random-shape", default=None, metavar="C,H,W", help="random images of this shape, no dataset")
    p.add_argument("--samples", type=int, default=256, help="training samples per shard")
    p.add_argument("--test-samples", type=int, default=64, help="test samples per shard (evaluated every epoch)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast of every forward (recipe.amp), both ways")
    p.add_argument("--smoke-test", action="store_true", help="lenet300, k=1,2, tiny sizes: seconds")
    a = p.parse_args(argv)
    if a.smoke_test:
        a.archs, a.ks, a.samples, a.test_samples, a.repeats = "lenet300", "1,2", 64, 32, 1
    return a


def make_config(a, arch: str, k: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset=a.dataset, data_root=a.data_root, augment=False),
        model=ModelConfig(arch=arch),
        recipe=RecipeConfig(epochs=a.epochs, batch_size=a.batch_size, lr=0.05, amp=a.amp),
        ticket=TicketConfig(shards=k, split="random"),
        resources=ResourcesConfig(device=a.device, threads=a.threads, progress=False),
    )


def shard_bundles(full, k: int, samples: int, test_samples: int):
    """k bundles of ``samples`` training samples each (consecutive slices, wrapping around)."""
    out = []
    for j in range(k):
        tr = (np.arange(samples) + j * samples) % len(full.train)
        te = (np.arange(test_samples) + j * test_samples) % len(full.test)
        out.append(dataclasses.replace(full, train=full.train.subset(tr), test=full.test.subset(te), val=None))
    return out


def random_data(a, k: int):
    """Uniform random images of ``--random-shape`` with random labels of 10 classes, enough for k shards."""
    from colt_ray.core.data.bundle import make_bundle

    shape = tuple(int(n) for n in a.random_shape.split(","))
    g = torch.Generator().manual_seed(0)
    n, m = k * a.samples, k * a.test_samples
    x, y = torch.rand((n + m, *shape), generator=g), torch.randint(0, 10, (n + m,), generator=g)
    return make_bundle(f"random {'x'.join(map(str, shape))}", x[:n], y[:n], x[n:], y[n:], num_classes=10)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, vmap tracing
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_one(a, full, arch: str, k: int) -> dict:
    cfg = make_config(a, arch, k)
    bundles = shard_bundles(full, k, a.samples, a.test_samples)
    theta = build_theta0(cfg, full.in_shape, full.num_classes)
    seq = [TicketTrainer(cfg, b, j, shard_head_seed(cfg, j)) for j, b in enumerate(bundles)]
    mask = None
    t_seq = timed(lambda: [t.run(theta, mask, 0, True) for t in seq], a.repeats)
    batched = BatchedShards(cfg, bundles, list(range(k)))
    t_bat = timed(lambda: batched.train_shards(theta, mask, 0), a.repeats)
    work = k * a.samples * a.epochs
    mem = batched.memory_report()
    return {
        "arch": arch,
        "k": k,
        "seq": work / t_seq,
        "batched": work / t_bat,
        "peak_mib": (mem["peak_bytes"] or 0) / 2**20,
        "est_mib": mem["estimated_bytes"] / 2**20,
    }


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(a.threads)
    ks = [int(k) for k in a.ks.split(",")]
    full = (
        random_data(a, max(ks))
        if a.random_shape
        else load_dataset(DataConfig(dataset=a.dataset, data_root=a.data_root, augment=False), 0)
    )
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {a.device}, "
        f"threads {a.threads}, dataset {full.name}, {a.samples} samples/shard, batch {a.batch_size}, "
        f"epochs {a.epochs}, best of {a.repeats}"
    )
    print(
        f"{'arch':<10} {'k':>2} {'seq/s':>9} {'batched/s':>10} {'batched/seq':>12} {'vs k x one':>11} "
        f"{'peak MiB':>9} {'est MiB':>8}"
    )
    for arch in a.archs.split(","):
        one = None
        for k in ks:
            r = bench_one(a, full, arch, k)
            one = r["seq"] if k == 1 else one
            vs = f"{r['batched'] / (k * one):>11.2f}" if one else f"{'-':>11}"
            print(
                f"{arch:<10} {k:>2} {r['seq']:>9.0f} {r['batched']:>10.0f} {r['batched'] / r['seq']:>12.2f} "
                f"{vs} {r['peak_mib']:>9.0f} {r['est_mib']:>8.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
