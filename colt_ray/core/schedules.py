"""Learning-rate schedules: one ``Schedule`` per name in ``SCHEDULES``, the registry ``--schedule`` reads.

A schedule is the factor of ``--lr`` after the warm-up at a 0-based step (``train.lr_factor`` multiplies it
with the warm-up's). The config's choices, ``--help``, ``colt-ray ticket --list`` and validation (a schedule
that needs ``--milestones``) come from these entries: a new schedule is one entry here. Pure Python (no
torch), so the command line checks a name before it imports anything heavy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from colt_ray.core.registry import Registry


@dataclass(frozen=True)
class Schedule:
    """``factor(step, steps_per_epoch, recipe)``: the multiplier of ``recipe.lr`` at ``step`` before the
    warm-up's. ``needs_milestones``: ``recipe.milestones`` must name at least one epoch."""

    name: str
    help: str
    factor: Callable[[int, int, Any], float]
    needs_milestones: bool = False


SCHEDULES: Registry[Schedule] = Registry("schedule", ordered=True)


def add(schedule: Schedule) -> Schedule:
    SCHEDULES.add(schedule.name, schedule)
    return schedule


def _step(step: int, steps_per_epoch: int, recipe: Any) -> float:
    return recipe.gamma ** math.floor(step / steps_per_epoch / recipe.milestones[0])


def _multistep(step: int, steps_per_epoch: int, recipe: Any) -> float:
    epoch = step / steps_per_epoch
    return recipe.gamma ** sum(1 for m in recipe.milestones if epoch >= m)


def _cosine(step: int, steps_per_epoch: int, recipe: Any) -> float:
    total = max(1, recipe.epochs * steps_per_epoch)
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


add(Schedule("constant", "the peak lr throughout", lambda step, steps_per_epoch, recipe: 1.0))
add(Schedule("step", "lr x gamma every milestones[0] epochs", _step, needs_milestones=True))
add(Schedule("multistep", "lr x gamma at each of the milestone epochs", _multistep, needs_milestones=True))
add(Schedule("cosine", "cosine decay from the peak lr to 0 at the last step", _cosine))
