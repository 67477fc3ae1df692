"""A sweep's search space as frozen dataclasses (:class:`SweepSpec`); ``parse`` builds it from YAML.

The format is documented in ``docs/sweeps.md``. Pure Python: nothing here starts Ray or writes a file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from colt_ray.core.errors import ConfigError

TOP_KEYS = (
    "name", "description", "fixed", "search", "objectives", "budget", "sampler", "scheduler", "allow_test_selection",
)  # fmt: skip
DIST_KINDS = ("float", "logfloat", "int", "choice")
# metric reported after every cycle -> its natural direction
METRICS = {
    "val_acc": "max",  # the ticket's best validation accuracy (needs val_fraction > 0)
    "val_acc_at_target": "max",  # val_acc of the first ticket at or past the target sparsity
    "acc": "max",  # test-set metrics: selecting on them needs allow_test_selection: true
    "acc_final": "max",
    "acc_at_target": "max",
    "sparsity": "max",
    "sample_epochs": "min",
    "wall_seconds": "min",
}
ACC_METRICS = ("val_acc", "val_acc_at_target", "acc", "acc_final", "acc_at_target")
TEST_METRICS = ("acc", "acc_final", "acc_at_target")  # the test set: never selects unless a space says so
TARGET_METRICS = ("acc_at_target", "val_acc_at_target")
MODES = ("max", "min")
SAMPLERS = ("tpe", "nsga2", "random")
BUDGET_KEYS = ("num_samples", "max_concurrent", "max_failures")
SAMPLER_KEYS = ("kind", "seed", "population_size")
SCHEDULER_KEYS = ("kind", "metric", "mode", "grace_period", "reduction_factor", "max_t")
OBJECTIVE_KEYS = ("metric", "mode", "target")


@dataclass(frozen=True)
class Dist:
    """One searched setting: ``float``/``logfloat``/``int`` over ``[lo, hi]`` (inclusive) or ``choice``."""

    kind: str
    values: tuple  # (lo, hi) for ranges, the choices for ``choice``

    def corners(self) -> tuple:
        """The values the up-front checks try: both ends of a range, every choice."""
        return self.values


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str
    target: Optional[float] = None  # acc_at_target: the sparsity a ticket must reach


@dataclass(frozen=True)
class Budget:
    num_samples: int = 8
    max_concurrent: int = 2
    max_failures: int = 1


@dataclass(frozen=True)
class SamplerSpec:
    kind: str  # tpe | nsga2 | random
    seed: Optional[int] = None
    population_size: Optional[int] = None  # nsga2 only


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA over cycles: a rung every ``grace_period * reduction_factor**i`` cycles."""

    metric: str
    mode: str
    grace_period: int = 1
    reduction_factor: int = 2
    max_t: int = 1000
    kind: str = "asha"


@dataclass(frozen=True)
class SweepSpec:
    name: str
    fixed: dict[str, Any]
    search: dict[str, Dist]
    objectives: tuple[Objective, ...]
    budget: Budget = field(default_factory=Budget)
    sampler: SamplerSpec = field(default_factory=lambda: SamplerSpec("tpe"))
    scheduler: Optional[SchedulerSpec] = None
    description: str = ""
    source: str = "<spec>"
    allow_test_selection: bool = False

    @property
    def multi(self) -> bool:
        """True with two objectives (a Pareto front)."""
        return len(self.objectives) > 1

    def base_config(self) -> dict[str, Any]:
        """The settings every trial shares (progress bars off inside trials unless asked for)."""
        return {"progress": False, **self.fixed}

    def with_overrides(
        self, name: Optional[str] = None, num_samples: Optional[int] = None, max_concurrent: Optional[int] = None
    ) -> SweepSpec:
        """A copy with the command line's ``--name``, ``--num-samples`` and ``--max-concurrent`` applied."""
        budget = self.budget
        if num_samples is not None:
            budget = dataclasses.replace(budget, num_samples=int_at_least("num-samples", num_samples, 1))
        if max_concurrent is not None:
            budget = dataclasses.replace(budget, max_concurrent=int_at_least("max-concurrent", max_concurrent, 1))
        return dataclasses.replace(
            self, name=sweep_name(name, "name") if name is not None else self.name, budget=budget
        )

    def smoke(self) -> SweepSpec:
        """A seconds-long version for CI and cluster checks: 2 trials, 1 epoch, 1 cycle, same space otherwise."""
        fixed = {k: v for k, v in self.fixed.items() if k != "target_sparsity"}
        fixed.update(epochs=1, cycles=1)
        search = {k: d for k, d in self.search.items() if k not in fixed}
        budget = dataclasses.replace(self.budget, num_samples=2, max_concurrent=min(2, self.budget.max_concurrent))
        return dataclasses.replace(self, fixed=fixed, search=search or self.search, budget=budget)


# ---- helpers shared with the parser ---------------------------------------------------------------
def int_at_least(where: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``, else a ConfigError at ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def sweep_name(value: Any, where: str) -> str:
    """``value`` if it is usable as a directory name, else a ConfigError at ``where``."""
    from colt_ray.results.layout import check_run_id

    try:
        return check_run_id(str(value))
    except ValueError:
        raise ConfigError(where, f"{value!r} is not usable as a directory name (letters, digits, _ . = + -)") from None
