"""The metrics a sweep reports after every cycle and may select on: one ``Metric`` per name in ``METRICS``.

An entry holds everything the other parts ask about a metric: its natural direction (the objective's and
ASHA's default mode), its help (``colt-ray ticket --list``, docs/sweeps.md), how a cycle's value is computed
(``trainable.cycle_metrics``), whether selecting on it uses the test set or needs a validation split, a
target sparsity or evaluated tickets (``parse``'s checks), and the TRIALS column it fills
(``trials.trial_row``; the column itself is declared in ``results/schema.py``). A new metric computed from a
cycle's ticket row and the trial's totals is one entry here. Pure Python: no Ray, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from colt_ray.core.registry import Registry


def as_float(value: Any) -> Optional[float]:
    """A float, or None for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def as_finite(value: Any) -> Optional[float]:
    """A float, or None for a missing, NaN or infinite value (a cost not yet paid: the target not reached)."""
    v = as_float(value)
    return v if v is not None and math.isfinite(v) else None


def as_count(value: Any) -> Optional[int]:
    v = as_finite(value)
    return None if v is None else int(v)


def _num(value: Any, missing: float = math.nan) -> float:
    return missing if value is None else float(value)


@dataclass(frozen=True)
class Metric:
    """``value(ticket_row, totals)``: the metric after a cycle, from the cycle's ticket row and the trial's
    ``state.Totals``. ``accuracy``: needs its tickets evaluated (``eval_tickets``); ``instead``: the metric is
    measured on the test set, and this validation metric is what to select on instead; ``validation``: needs
    a validation split; ``target``: measured at a target sparsity (reported only with one). ``column`` and
    ``store``: the TRIALS column the trial's last value goes to, and how it is stored there."""

    name: str
    mode: str
    help: str
    value: Callable[[dict, Any], Any]
    accuracy: bool = False
    instead: Optional[str] = None
    validation: bool = False
    target: bool = False
    column: Optional[str] = None
    store: Callable[[Any], Any] = as_float

    @property
    def test(self) -> bool:
        """Measured on the test set: it never selects unless a space says ``allow_test_selection: true``."""
        return self.instead is not None


METRICS: Registry[Metric] = Registry("metric", ordered=True)


def add(metric: Metric) -> Metric:
    METRICS.add(metric.name, metric)
    return metric


def _reached(totals: Any, value: Any) -> Any:
    return value if totals.target_cycle is not None else math.inf


# the order here is the order a cycle reports them in (and lists them in messages)
add(
    Metric(
        "val_acc",
        "max",
        "the ticket's best validation accuracy (needs val_fraction > 0)",
        lambda t, totals: _num(t.get("val_acc_best")),
        accuracy=True,
        validation=True,
    )
)
add(
    Metric(
        "acc",
        "max",
        "the ticket's best test accuracy over its epochs",
        lambda t, totals: _num(t["acc_best"]),
        accuracy=True,
        instead="val_acc",
        column="final_acc_best",
    )
)
add(
    Metric(
        "acc_final",
        "max",
        "the ticket's test accuracy after its last epoch",
        lambda t, totals: _num(t["acc_final"]),
        accuracy=True,
        instead="val_acc",
        column="final_acc_final",
    )
)
add(
    Metric(
        "acc_at_target",
        "max",
        "test acc_best of the first ticket at or past the target sparsity (0 until one is)",
        lambda t, totals: totals.acc_at_target,
        accuracy=True,
        instead="val_acc_at_target",
        target=True,
    )
)
add(
    Metric(
        "val_acc_at_target",
        "max",
        "val_acc of the first ticket at or past the target sparsity (0 until one is)",
        lambda t, totals: totals.val_acc_at_target,
        accuracy=True,
        validation=True,
        target=True,
        column="val_acc_at_target",
    )
)
add(
    Metric(
        "test_acc_at_target",
        "max",
        "test accuracy of that ticket at its best-validation epoch (reported beside val_acc_at_target)",
        lambda t, totals: totals.test_acc_at_target,
        accuracy=True,
        instead="val_acc_at_target",
        target=True,
        column="test_acc_at_target",
    )
)
add(Metric("sparsity", "max", "the ticket's sparsity", lambda t, totals: float(t["sparsity"]), column="final_sparsity"))
add(
    Metric(
        "sample_epochs",
        "min",
        "training samples seen so far, in epochs of the full training set",
        lambda t, totals: int(totals.sample_epochs),
        column="sample_epochs",
        store=lambda v: v,
    )
)
add(
    Metric(
        "wall_seconds",
        "min",
        "wall seconds of the search so far",
        lambda t, totals: float(totals.wall_seconds),
        column="wall_seconds",
    )
)
add(
    Metric(
        "rounds_at_target",
        "min",
        "prune rounds to the first ticket at or past the target sparsity (infinite until one is)",
        lambda t, totals: _reached(totals, totals.target_cycle),
        target=True,
        column="rounds_at_target",
        store=as_count,
    )
)
add(
    Metric(
        "sample_epochs_at_target",
        "min",
        "sample-epochs to that ticket (infinite until one is)",
        lambda t, totals: _reached(totals, totals.sample_epochs_at_target),
        target=True,
        column="sample_epochs_at_target",
        store=as_count,
    )
)
add(
    Metric(
        "wall_at_target",
        "min",
        "wall seconds to that ticket (infinite until one is)",
        lambda t, totals: _reached(totals, totals.wall_at_target),
        target=True,
        column="wall_at_target",
        store=as_finite,
    )
)


def names(**flags: bool) -> tuple[str, ...]:
    """The metric names whose entries have every given attribute at the given truth value
    (``names(target=True)``, ``names(test=True)``)."""
    return tuple(n for n in METRICS if all(bool(getattr(METRICS.get(n), k)) == v for k, v in flags.items()))
