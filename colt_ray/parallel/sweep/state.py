"""A trial's checkpoint: the ``Resume`` state after a completed cycle, as numpy arrays.

``state.json`` holds the cycle, the run id, whether the search finished, the running totals and the
metrics last reported; ``masks.npz`` and ``theta.npz`` hold the arrays (loaded with pickling off). A sweep
trial keeps its checkpoint as one packed file (:func:`pack_state`) at :func:`resume_rel` in the sweep
directory, replaced after every cycle; ``save_state``/``load_state`` write and read the same content as a
directory. A retried or restored trial continues after that cycle, so no completed cycle is trained or
written again.
"""

from __future__ import annotations

import io
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
RESUME_DIR = ("tune", "resume")  # beside Tune's own experiment state (tuner.TUNE_DIR)


def resume_rel(trial_id: str) -> tuple[str, ...]:
    """Where, relative to the sweep directory, trial ``trial_id`` keeps its packed checkpoint."""
    return (*RESUME_DIR, f"trial_{trial_id}.npz")


@dataclass
class Totals:
    """What a trial accumulates over cycles (kept across retries)."""

    sample_epochs: int = 0
    chain_seconds: float = 0.0  # the mask chain's critical path so far (runner.ResultsSink.chain_seconds)
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


def state_files(
    record: CycleRecord, totals: Totals, metrics: dict[str, Any], theta0: Optional[dict] = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The checkpoint of ``record``'s completed cycle: its array files (name -> arrays) and ``state.json``.

    Masks are stored at one bit per weight (``masks.npz``: the ticket's mask and every shard proposal). The
    next cycle's rewind point is stored only when it is not ``theta0`` (a resumed trial rebuilds theta_0 from
    its config): COLT's checkpoints hold no weights, except theta_k after late rewinding, as IMP's do.
    """
    bits, shapes = record.mask.packed()
    masks = {f"mask/{k}": v for k, v in bits.items()}
    for i, proposal in enumerate(record.proposals):
        masks.update({f"proposal-{i:04d}/{k}": v for k, v in proposal.packed()[0].items()})
    files = {"masks.npz": masks}
    rewind = record.next_theta
    own_theta = theta0 is None or rewind is not theta0
    if own_theta:
        files["theta.npz"] = {k: np.asarray(v) for k, v in rewind.items()}
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
    return files, state


def save_state(
    path: str, record: CycleRecord, totals: Totals, metrics: dict[str, Any], theta0: Optional[dict] = None
) -> None:
    """Write the checkpoint of ``record``'s completed cycle (:func:`state_files`) into the directory ``path``."""
    os.makedirs(path, exist_ok=True)
    files, state = state_files(record, totals, metrics, theta0)
    for name, arrays in files.items():
        np.savez(os.path.join(path, name), **arrays)
    with open(os.path.join(path, STATE_FILE), "w", encoding="utf-8") as fh:
        json.dump(state, fh, default=_jsonable)


def pack_state(record: CycleRecord, totals: Totals, metrics: dict[str, Any], theta0: Optional[dict] = None) -> bytes:
    """The checkpoint of :func:`save_state` as the bytes of one ``.npz`` (``<file>/<array>`` entries and
    ``state.json`` as bytes): one file, so that it is replaced in one atomic write (one put on an object
    store) and never seen half old, half new."""
    files, state = state_files(record, totals, metrics, theta0)
    arrays = {f"{name}/{k}": v for name, entries in files.items() for k, v in entries.items()}
    arrays[STATE_FILE] = np.frombuffer(json.dumps(state, default=_jsonable).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack_state(data: bytes) -> TrialState:
    """Read the bytes written by :func:`pack_state` (loaded with pickling off)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        entries = {k: f[k] for k in f.files}
    state = json.loads(entries.pop(STATE_FILE).tobytes().decode())
    files: dict[str, dict[str, np.ndarray]] = {}
    for key, value in entries.items():
        name, _, inner = key.partition("/")
        files.setdefault(name, {})[inner] = value
    return _trial_state(state, lambda name: files[name], "a packed checkpoint")


def load_state(path: str) -> TrialState:
    """Read a checkpoint directory written by :func:`save_state` (or by version 1: bool masks, theta always).
    ``resume.theta`` is None where the checkpoint says the rewind point is theta_0."""
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as fh:
        state = json.load(fh)
    return _trial_state(state, lambda name: _arrays(path, name), f"checkpoint {path}")


def _trial_state(state: dict[str, Any], arrays_of: Any, what: str) -> TrialState:
    """The ``TrialState`` of a checkpoint's ``state.json`` whose array files ``arrays_of(name)`` reads."""
    version = state.get("version")
    if version not in (1, VERSION):
        raise ValueError(f"{what} has version {version}, expected {VERSION}")
    n = state["proposals"]
    if version == 1:
        mask = Mask.from_numpy(arrays_of("mask.npz"))
        proposals = [Mask.from_numpy(arrays_of(f"proposal-{i:04d}.npz")) for i in range(n)]
        theta: Optional[dict] = arrays_of("theta.npz")
    else:
        arrays, shapes = arrays_of("masks.npz"), state["mask_shapes"]
        mask = Mask.from_packed({k: arrays[f"mask/{k}"] for k in shapes}, shapes)
        proposals = [Mask.from_packed({k: arrays[f"proposal-{i:04d}/{k}"] for k in shapes}, shapes) for i in range(n)]
        theta = arrays_of("theta.npz") if state["theta"] == "theta.npz" else None
    resume = Resume(cycle=int(state["cycle"]), mask=mask, proposals=proposals, theta=theta)
    return TrialState(state["run_id"], resume, bool(state["done"]), Totals(**state["totals"]), state["metrics"])


def _arrays(path: str, name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(path, name), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
