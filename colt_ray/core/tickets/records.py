"""Metrics as pure functions returning flat dicts, one-to-one with the ``cycles`` and ``layers`` columns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from colt_ray.core.pruning import Mask, jaccard, layer_overlap


@dataclass
class CycleRecord:
    """Everything one finished cycle (COLT) or level (IMP) produced, handed to the sink."""

    run_id: str
    cycle: int
    mask: Mask  # the ticket's mask at this cycle
    theta: dict[str, np.ndarray]  # the rewind point of the ticket
    cycle_rows: list[dict]
    layer_rows: list[dict]
    proposals: list[Mask] = field(default_factory=list)  # the shard masks that formed the next cycle's AND
    done: bool = False
    # the rewind point of the cycles after this one when it is not ``theta`` (IMP's theta_k, captured at level 0)
    rewind: Optional[dict[str, np.ndarray]] = None

    @property
    def next_theta(self) -> dict[str, np.ndarray]:
        """Where the next cycle starts from (what a checkpoint keeps to resume)."""
        return self.rewind if self.rewind is not None else self.theta

    @property
    def ticket_row(self) -> dict:
        return next(r for r in self.cycle_rows if r["shard"] is None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def mask_summary(
    mask: Mask, groups: dict[str, str], total_params: Optional[int] = None, weight_params: Optional[int] = None
) -> dict:
    """Sparsity over the prune groups (``sparsity``, what ``target_sparsity`` means), over every parameter of
    the retrained ticket (``sparsity_all``: heads, BatchNorm, biases and skip paths count as kept), and over
    the weights of its Linear, Conv and BatchNorm layers (``sparsity_weights``, biases left out: the "prune
    rate" of the COLT paper, ``prune_rate_calculator`` in the COLT code's ``prune.py``, as a fraction)."""
    conv = [n for n in mask if groups.get(n) == "conv"]
    pruned = mask.numel() - mask.kept()
    return {
        "sparsity": mask.sparsity(),
        "sparsity_all": pruned / total_params if total_params else None,
        "sparsity_weights": pruned / weight_params if weight_params else None,
        "conv_sparsity": mask.sparsity(conv) if conv else None,
        "kept_weights": mask.kept(),
        "prunable_weights": mask.numel(),
    }


def ticket_row(
    run_id: str,
    cycle: int,
    mask: Mask,
    groups: dict[str, str],
    metrics: Optional[dict],
    merged_from: Sequence[Mask],
    total_params: Optional[int] = None,
    weight_params: Optional[int] = None,
) -> dict:
    """The merged ticket's row (shard = None). ``metrics`` None when the ticket was not evaluated."""
    row = {"run_id": run_id, "cycle": cycle, "shard": None, **mask_summary(mask, groups, total_params, weight_params)}
    row.update(_metric_cols(metrics))
    row["overlap"] = jaccard(list(merged_from)) if len(merged_from) > 1 else None
    row["finished_at"] = _now()
    return row


def shard_row(
    run_id: str,
    cycle: int,
    shard: int,
    mask: Mask,
    groups: dict[str, str],
    metrics: dict,
    total_params: Optional[int] = None,
    weight_params: Optional[int] = None,
) -> dict:
    """One shard's training in this cycle (under the cycle's ticket mask), accuracy on its own test shard."""
    row = {"run_id": run_id, "cycle": cycle, "shard": shard, **mask_summary(mask, groups, total_params, weight_params)}
    row.update(_metric_cols(metrics))
    row["overlap"] = None
    row["finished_at"] = _now()
    return row


def fill_ticket_metrics(record: CycleRecord, metrics: dict) -> None:
    """Put a ticket evaluation that landed after its cycle into the cycle's ticket row."""
    record.ticket_row.update(_metric_cols(metrics))


def _metric_cols(metrics: Optional[dict]) -> dict:
    """The accuracy and cost columns; ``evaluated`` False (and accuracies null) when nothing was trained."""
    keys = (
        "acc_best",
        "acc_final",
        "val_acc_best",
        "test_acc_at_best_val",
        "loss",
        "sample_epochs",
        "mask_sample_epochs",
        "teacher_sample_epochs",
        "wall_seconds",
        "cpu_seconds",
    )
    if metrics is None:
        return dict.fromkeys(keys) | {"sample_epochs": 0, "wall_seconds": 0.0, "evaluated": False}
    return {k: metrics.get(k) for k in keys} | {"evaluated": True}


def layer_rows(run_id: str, cycle: int, mask: Mask, groups: dict[str, str], merged_from: Sequence[Mask]) -> list[dict]:
    """One row per prunable tensor: size, kept weights, density, and Jaccard overlap of the shard masks."""
    overlaps = layer_overlap(list(merged_from)) if len(merged_from) > 1 else {}
    rows = []
    for name, dens in mask.density().items():
        rows.append(
            {
                "run_id": run_id,
                "cycle": cycle,
                "layer": name,
                "group": groups[name],
                "numel": mask[name].numel(),
                "kept": int(mask[name].sum()),
                "density": dens,
                "overlap": overlaps.get(name),
            }
        )
    return rows
