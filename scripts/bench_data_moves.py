#!/usr/bin/env python3
"""Bytes a sweep puts in the object store, and a shard actor pulls, before and after "data moved once"
(issue 19): per sweep, per trial and per cycle, for COLT with k = 2, 4, 8 shards (lenet300 on mnist10k).

"after" is measured: a COLT run of the project's ``Coordinator`` (its trainers in this process, 0 epochs:
the objects are those of a real run, without the training), every object it puts and every proposal its
trainers return counted at the size Ray stores it (pickle protocol 5, out-of-band buffers included); the
dataset is the one object the sweep's driver puts. "before" is the scheme of main at 38aed6b, computed from
the same objects: each trial put the full set (and each shard actor pulled all of it), each cycle's mask was put
twice as bool arrays (once for the k shards, once for the evaluation), and proposals came back as bool arrays.

    python scripts/bench_data_moves.py --data-root ../shared/data/mnist10k.npz     # k = 2, 4, 8
    python scripts/bench_data_moves.py --smoke-test                                # digits, k = 2, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional
from unittest import mock

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist10k.npz"


def wire_bytes(value: Any) -> int:
    """The bytes of ``value`` in Ray's object store: its pickle (protocol 5) plus its out-of-band buffers."""
    buffers: list = []
    head = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


def kind(value: Any) -> str:
    """What a put object is: a dataset (a set of rows, or a list of them), a packed mask, or a weight state."""
    from colt_ray.core.pruning import PackedMask

    if isinstance(value, PackedMask):
        return "mask"
    if isinstance(value, dict) and "train" in value or isinstance(value, list):
        return "rows"
    return "theta"


def measure_after(cfg: Any) -> dict[str, Any]:
    """Run ``cfg`` through the ``Coordinator`` (trainers in this process) with the sweep's dataset handed in,
    as a trial gets it; every put and returned proposal, by kind."""
    from colt_ray.core.data import bundle_arrays
    from colt_ray.core.tickets.search import prepare
    from colt_ray.parallel.actors import LocalPool
    from colt_ray.parallel.coordinator import Coordinator

    prepared = prepare(cfg)
    puts: list[tuple[str, int]] = []
    returned: list[int] = []
    real_put, real_run = LocalPool.put, LocalPool.run

    def put(pool: Any, value: Any) -> Any:
        puts.append((kind(value), wire_bytes(value)))
        return real_put(pool, value)

    def run(pool: Any, *args: Any, **kwargs: Any) -> Any:
        outs = real_run(pool, *args, **kwargs)
        returned.extend(wire_bytes(o.mask) for o in outs if o.mask is not None)
        return outs

    shared = bundle_arrays(prepared.bundle)  # what the sweep's driver puts, once
    records: list = []
    with mock.patch.object(LocalPool, "put", put), mock.patch.object(LocalPool, "run", run):
        Coordinator(cfg, use_ray=False).attach(prepared, shared).run(records.append)
    total = {k: sum(b for what, b in puts if what == k) for k in ("rows", "theta", "mask")}
    masks = sum(what == "mask" for what, _ in puts)
    trainings = sum(bool(r.proposals) for r in records)
    return {"prepared": prepared, "records": records, "dataset": wire_bytes(shared), "puts": total,
            "mask_puts": masks, "returned": sum(returned), "trainings": trainings}  # fmt: skip


def before(after: dict[str, Any]) -> dict[str, int]:
    """main's scheme over the same run: the full set per trial, each cycle's mask twice as bool arrays (the
    shards' put and the evaluation's), k bool proposals back per shard training."""
    records, k = after["records"], after["prepared"].cfg.num_shards
    mask = wire_bytes(records[0].mask.to_numpy())
    proposal = wire_bytes(records[0].proposals[0].to_numpy()) if records[0].proposals else 0
    evaluated = sum(bool(r.ticket_row.get("evaluated")) for r in records)
    return {"dataset": after["dataset"], "mask": mask * (after["trainings"] + evaluated), "mask_puts":
            after["trainings"] + evaluated, "returned": proposal * k * after["trainings"]}  # fmt: skip


def mb(n: float) -> str:
    return f"{n / 1e6:9.3f} MB"


def report(k: int, after: dict[str, Any], trials: Sequence[int]) -> list[str]:
    """The lines of one k: per sweep (the full set), per trial (rows, theta_0, what a shard pulls), per cycle."""
    old, cycles = before(after), len(after["records"])
    d, rows, theta = after["dataset"], after["puts"]["rows"], after["puts"]["theta"]
    lines = [f"k = {k}: {cycles} cycles ({after['trainings']} shard trainings), every ticket evaluated"]
    row = "  {:46s} {:>14s} {:>14s}"
    lines.append(row.format("", "before", "after"))
    for n in trials:
        lines.append(row.format(f"full dataset put, per sweep of {n} trials", mb(n * d), mb(d)))
    lines.append(row.format("full dataset put, per trial", mb(d), mb(0)))
    lines.append(row.format("shard rows put, per trial (k sets)", mb(0), mb(rows)))
    lines.append(row.format("pulled by each shard actor's node, per trial", mb(d), mb(rows / k)))
    lines.append(row.format("theta_0 put, per trial", mb(theta), mb(theta)))
    one_old, one_new = old["mask"] / old["mask_puts"], after["puts"]["mask"] / after["mask_puts"]
    lines.append(row.format("one mask put", mb(one_old), mb(one_new)) + f"   ({one_old / one_new:.1f}x)")
    per_old, per_new = old["mask"] / cycles, after["puts"]["mask"] / cycles
    lines.append(row.format("masks put, per cycle", mb(per_old), mb(per_new)) + f"   ({per_old / per_new:.1f}x)")
    lines.append(
        row.format("mask puts, per cycle", f"{old['mask_puts'] / cycles:.2f}", f"{after['mask_puts'] / cycles:.2f}")
    )
    trainings = max(1, after["trainings"])
    lines.append(row.format("proposals returned, per shard training", mb(old["returned"] / trainings),
                            mb(after["returned"] / trainings)))  # fmt: skip
    return lines


def config(args: argparse.Namespace, k: int) -> Any:
    from colt_ray.core.config import RunConfig, TicketConfig

    d = RunConfig()
    data = dataclasses.replace(d.data, dataset=args.dataset, data_root=args.data_root)
    return d.replace(
        data=data,
        model=dataclasses.replace(d.model, arch=args.arch),
        recipe=dataclasses.replace(d.recipe, epochs=0),  # the objects of a run, not its training
        ticket=TicketConfig(method="colt", shards=k, cycles=args.cycles, eval_tickets="all"),
        resources=dataclasses.replace(d.resources, progress=False, backend="ray"),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="npz")
    p.add_argument("--data-root", default=str(MNIST.resolve()), help="mnist10k.npz")
    p.add_argument("--arch", default="lenet300")
    p.add_argument("--shards", default="2,4,8", help="k values, comma-separated")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--trials", default="1,10,100", help="sweep sizes to show the dataset bytes for")
    p.add_argument("--smoke-test", action="store_true", help="digits, conv2, k = 2, 1 cycle")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.dataset, args.data_root, args.arch, args.shards, args.cycles = "digits", None, "conv2", "2", 1
    trials = [int(n) for n in args.trials.split(",")]
    for i, k in enumerate(int(s) for s in args.shards.split(",")):
        after = measure_after(config(args, k))
        if i == 0:
            b = after["prepared"].bundle
            weights = after["records"][0].mask.numel()
            print(f"{args.arch} on {args.dataset} ({len(b.train):,} train / {len(b.test):,} test images), "
                  f"{weights:,} prunable weights, full dataset {after['dataset'] / 1e6:.3f} MB")  # fmt: skip
        print("\n".join(report(k, after, trials)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
