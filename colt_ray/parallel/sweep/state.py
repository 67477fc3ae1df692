"""A trial's checkpoint: the ``Resume`` state after a completed cycle, as numpy files in a directory.

``state.json`` holds the cycle, the run id, whether the search finished, the running totals and the
metrics last reported; ``mask.npz``, ``theta.npz`` and ``proposal-<i>.npz`` hold the arrays (loaded with
pickling off). A retried or restored trial continues after that cycle, so no completed cycle is trained or
written again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.methods import Resume
from colt_ray.core.tickets.records import CycleRecord

STATE_FILE = "state.json"
VERSION = 2  # 2: masks at one bit per weight, theta_0 not stored


@dataclass
class Totals:
    """What a trial accumulates over cycles (kept across retries)."""

    sample_epochs: int = 0
    wall_seconds: float = 0.0
    dense_acc: Optional[float] = None
    dense_selection: Optional[float] = None  # the dense ticket's accuracy that max_acc_drop compares against
    # the first ticket at or past the target sparsity (None until one is reached)
    target_cycle: Optional[int] = None
    acc_at_target: float = 0.0  # its test accuracy (acc_best)
    val_acc_at_target: float = 0.0  # its best validation accuracy
    test_acc_at_target: float = 0.0  # its test accuracy at that best-validation epoch
    sample_epochs_at_target: Optional[int] = None
    wall_at_target: Optional[float] = None
    # where a trial's time went (sweep efficiency, docs/sweeps.md)
    prepare_seconds: float = 0.0  # data loading, theta_0, trainer set-up
    checkpoint_seconds: float = 0.0  # writing results, checkpointing and reporting each cycle
    train_cpu_seconds: float = 0.0  # CPU seconds of the training rows written (cycles.cpu_seconds, summed)


@dataclass
class TrialState:
    """A loaded checkpoint: where to resume, the totals so far, the last metrics reported."""

    run_id: str
    resume: Resume
    done: bool
    totals: Totals = field(default_factory=Totals)
    metrics: dict[str, Any] = field(default_factory=dict)


def save_state(
    path: str, record: CycleRecord, totals: Totals, metrics: dict[str, Any], theta0: Optional[dict] = None
) -> None:
    """Write the checkpoint of ``record``'s completed cycle into the directory ``path``.

    Masks are stored at one bit per weight (``masks.npz``: the ticket's mask and every shard proposal). The
    next cycle's rewind point is stored only when it is not ``theta0`` (a resumed trial rebuilds theta_0 from
    its config): COLT's checkpoints hold no weights, IMP's hold theta_k after late rewinding.
    """
    os.makedirs(path, exist_ok=True)
    bits, shapes = record.mask.packed()
    arrays = {f"mask/{k}": v for k, v in bits.items()}
    for i, proposal in enumerate(record.proposals):
        arrays.update({f"proposal-{i:04d}/{k}": v for k, v in proposal.packed()[0].items()})
    np.savez(os.path.join(path, "masks.npz"), **arrays)
    rewind = record.next_theta
    own_theta = theta0 is None or rewind is not theta0
    if own_theta:
        np.savez(os.path.join(path, "theta.npz"), **{k: np.asarray(v) for k, v in rewind.items()})
    state = {
        "version": VERSION,
        "run_id": record.run_id,
        "cycle": record.cycle,
        "done": bool(record.done),
        "proposals": len(record.proposals),
        "mask_shapes": shapes,
        "theta": "theta.npz" if own_theta else "theta0",
        "totals": vars(totals),
        "metrics": metrics,
    }
    with open(os.path.join(path, STATE_FILE), "w", encoding="utf-8") as fh:
        json.dump(state, fh, default=_jsonable)


def load_state(path: str) -> TrialState:
    """Read a checkpoint directory written by :func:`save_state` (or by version 1: bool masks, theta always).
    ``resume.theta`` is None where the checkpoint says the rewind point is theta_0."""
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as fh:
        state = json.load(fh)
    version = state.get("version")
    if version not in (1, VERSION):
        raise ValueError(f"checkpoint {path} has version {version}, expected {VERSION}")
    n = state["proposals"]
    if version == 1:
        mask = Mask.from_numpy(_arrays(path, "mask.npz"))
        proposals = [Mask.from_numpy(_arrays(path, f"proposal-{i:04d}.npz")) for i in range(n)]
        theta: Optional[dict] = _arrays(path, "theta.npz")
    else:
        arrays, shapes = _arrays(path, "masks.npz"), state["mask_shapes"]
        mask = Mask.from_packed({k: arrays[f"mask/{k}"] for k in shapes}, shapes)
        proposals = [Mask.from_packed({k: arrays[f"proposal-{i:04d}/{k}"] for k in shapes}, shapes) for i in range(n)]
        theta = _arrays(path, "theta.npz") if state["theta"] == "theta.npz" else None
    resume = Resume(cycle=int(state["cycle"]), mask=mask, proposals=proposals, theta=theta)
    return TrialState(state["run_id"], resume, bool(state["done"]), Totals(**state["totals"]), state["metrics"])


def _arrays(path: str, name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(path, name), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
