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
VERSION = 1


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


@dataclass
class TrialState:
    """A loaded checkpoint: where to resume, the totals so far, the last metrics reported."""

    run_id: str
    resume: Resume
    done: bool
    totals: Totals = field(default_factory=Totals)
    metrics: dict[str, Any] = field(default_factory=dict)


def save_state(path: str, record: CycleRecord, totals: Totals, metrics: dict[str, Any]) -> None:
    """Write the checkpoint of ``record``'s completed cycle into the directory ``path``."""
    os.makedirs(path, exist_ok=True)
    np.savez(os.path.join(path, "mask.npz"), **record.mask.to_numpy())
    # the rewind point of the next cycle (IMP's late-rewind theta_k after level 0), which a resumed run starts from
    np.savez(os.path.join(path, "theta.npz"), **{k: np.asarray(v) for k, v in record.next_theta.items()})
    for i, proposal in enumerate(record.proposals):
        np.savez(os.path.join(path, f"proposal-{i:04d}.npz"), **proposal.to_numpy())
    state = {
        "version": VERSION,
        "run_id": record.run_id,
        "cycle": record.cycle,
        "done": bool(record.done),
        "proposals": len(record.proposals),
        "totals": vars(totals),
        "metrics": metrics,
    }
    with open(os.path.join(path, STATE_FILE), "w", encoding="utf-8") as fh:
        json.dump(state, fh, default=_jsonable)


def load_state(path: str) -> TrialState:
    """Read a checkpoint directory written by :func:`save_state`."""
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as fh:
        state = json.load(fh)
    if state.get("version") != VERSION:
        raise ValueError(f"checkpoint {path} has version {state.get('version')}, expected {VERSION}")
    proposals = [Mask.from_numpy(_arrays(path, f"proposal-{i:04d}.npz")) for i in range(state["proposals"])]
    resume = Resume(
        cycle=int(state["cycle"]),
        mask=Mask.from_numpy(_arrays(path, "mask.npz")),
        proposals=proposals,
        theta=_arrays(path, "theta.npz"),
    )
    return TrialState(state["run_id"], resume, bool(state["done"]), Totals(**state["totals"]), state["metrics"])


def _arrays(path: str, name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(path, name), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
