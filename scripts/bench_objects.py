"""Bytes a COLT cycle writes and sends, before and after the lean-object change (issue 12): one trial's checkpoint
(the ticket mask and k shard proposals, plus the rewind point) and the cycle's ticket file, for ResNet-18 on
CIFAR-shaped inputs with k = 8 shards at 50% density.

Before: masks as bool arrays (one byte per weight), theta_0 in every checkpoint and every ticket file
(checkpoint version 1, ticket format /1, written here exactly as that code wrote them). After: masks at one
bit per weight, theta_0 rebuilt from the config instead of checkpointed, and stored once per run in
``theta0.safetensors`` that ticket files refer to (version 2, format /2, the project's own writers).

    python scripts/bench_objects.py                 # resnet18, k = 8
    python scripts/bench_objects.py --arch resnet20 --shards 4
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from safetensors.torch import save as save_safetensors

    from colt_ray.core.models import build_model, prunable_names
    from colt_ray.core.pruning import Mask
    from colt_ray.core.tickets.io import THETA0_FILE, theta_file_bytes, ticket_bytes
    from colt_ray.core.tickets.records import CycleRecord
    from colt_ray.core.tickets.trainer import state_to_numpy
    from colt_ray.parallel.sweep.state import Totals, save_state

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--shards", type=int, default=8)
    args = p.parse_args(argv)
    model = build_model(args.arch, (3, 32, 32), 10, seed=0)
    theta0 = state_to_numpy(model)
    params = dict(model.named_parameters())
    names = prunable_names(model, ("conv", "linear"))
    g = torch.Generator().manual_seed(0)
    masks = [Mask({n: torch.rand(params[n].shape, generator=g) < 0.5 for n in names}) for _ in range(args.shards + 1)]
    record = CycleRecord("r", 1, masks[0], theta0, [], [], masks[1:], False)
    weights = sum(v.numel() for _, v in masks[0].items())
    with tempfile.TemporaryDirectory() as before, tempfile.TemporaryDirectory() as after:
        # version 1, as it was written: bool masks, theta every cycle
        np.savez(os.path.join(before, "mask.npz"), **record.mask.to_numpy())
        np.savez(os.path.join(before, "theta.npz"), **theta0)
        for i, m in enumerate(record.proposals):
            np.savez(os.path.join(before, f"proposal-{i:04d}.npz"), **m.to_numpy())
        with open(os.path.join(before, "state.json"), "w") as fh:
            json.dump({"version": 1}, fh)
        ckpt_before = dir_bytes(before)
        save_state(after, record, Totals(), {}, theta0=theta0)
        ckpt_after = dir_bytes(after)
    tensors = {f"theta/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in theta0.items()}
    tensors.update({f"mask/{k}": v for k, v in record.mask.items()})
    ticket_before = len(save_safetensors(tensors, metadata={"format": "colt_ray.ticket/1"}))
    ticket_after = len(ticket_bytes(theta0, record.mask, {"arch": args.arch}, theta_ref=THETA0_FILE))
    theta_once = len(theta_file_bytes(theta0))
    print(f"{args.arch}: {weights:,} prunable weights, {sum(v.nbytes for v in theta0.values()):,} bytes of theta_0, "
          f"k = {args.shards}")  # fmt: skip
    rows = [("checkpoint per cycle", ckpt_before, ckpt_after), ("ticket file per cycle", ticket_before, ticket_after)]
    rows.append(("total per cycle", ckpt_before + ticket_before, ckpt_after + ticket_after))
    for what, b, a in rows:
        print(f"  {what:22s} before {b / 1e6:8.2f} MB   after {a / 1e6:8.2f} MB   ({b / a:.1f}x smaller)")
    print(f"  once per run (after): theta0.safetensors {theta_once / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
