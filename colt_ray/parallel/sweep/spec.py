"""A sweep's search space as frozen dataclasses (:class:`SweepSpec`); ``parse`` builds it from YAML.

The format is documented in ``docs/sweeps.md``. Pure Python: nothing here starts Ray or writes a file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from colt_ray.core.config import value_type
from colt_ray.core.errors import ConfigError

TOP_KEYS = (
    "name", "description", "fixed", "search", "compare", "seeds", "objectives", "budget", "sampler", "scheduler",
    "allow_test_selection", "points_to_evaluate", "callbacks",
)  # fmt: skip
DIST_KINDS = ("float", "logfloat", "int", "logint", "choice", "grid")
VALUE_KINDS = ("choice", "grid")  # listed values; a grid's are each tried (Optuna's GridSampler), a choice's sampled
INT_KINDS = ("int", "logint")
# the metrics a cycle reports, their directions and what selecting on them needs: ``metrics.METRICS``
MODES = ("max", "min")
SAMPLERS = ("tpe", "gp", "cmaes", "qmc", "nsga2", "random", "grid")
# each sampler option and the kinds it applies to (Optuna's own names, passed through as keyword arguments)
SAMPLER_OPTIONS = {
    "multivariate": ("tpe",),
    "group": ("tpe",),
    "constant_liar": ("tpe",),
    "n_startup_trials": ("tpe", "gp", "cmaes"),
    "population_size": ("nsga2",),
    "qmc_type": ("qmc",),
    "scramble": ("qmc",),
}
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)  # Optuna's CmaEsSampler raises on a multi-objective study
MULTI_OBJECTIVE_SAMPLERS = ("nsga2",)
QMC_TYPES = ("sobol", "halton")
# Optuna's guidance for two objectives (NSGAIIISampler's docs): Bayesian optimisation (TPE, GP) is sample
# efficient below ~1,000 trials; a genetic algorithm needs generations of population_size trials
MANY_RECIPES = 1000
BUDGET_KEYS = ("num_samples", "max_concurrent", "max_failures")
SAMPLER_KEYS = ("kind", "seed", "storage", *SAMPLER_OPTIONS)
SCHEDULER_KEYS = ("kind", "metric", "mode", "time_attr", "grace_period", "reduction_factor", "max_t")
# ASHA's progress axis, reported after every cycle: cycles done, or the ticket's sparsity in whole percent
TIME_ATTRS = ("cycle", "sparsity_pct")
OBJECTIVE_KEYS = ("metric", "mode", "target")


@dataclass(frozen=True)
class Dist:
    """One searched setting: ``float``/``logfloat``/``int``/``logint`` over ``[lo, hi]`` (inclusive),
    ``choice`` (values sampled) or ``grid`` (every value tried)."""

    kind: str
    values: tuple  # (lo, hi) for ranges, the values for ``choice`` and ``grid``

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
    kind: str  # one of SAMPLERS
    seed: Optional[int] = None
    options: tuple = ()  # (name, value) pairs of SAMPLER_OPTIONS for this kind, as the space gave them
    storage: Optional[str] = None  # the study's Optuna storage (tuner.optuna_storage); None: the default

    @property
    def kwargs(self) -> dict:
        return dict(self.options)


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA: a rung every ``grace_period * reduction_factor**i`` units of ``time_attr`` (cycles, or percent
    sparsity when trials prune at different rates: they are compared at equal sparsity, not equal cycles)."""

    metric: str
    mode: str
    grace_period: int = 1
    reduction_factor: int = 2
    max_t: int = 1000
    kind: str = "asha"
    time_attr: str = "cycle"


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
    compare: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> its own fixed settings
    seeds: int = 1  # each sampled recipe runs once per seed (and per compared method)
    # settings Optuna tries first (each names every searched setting), e.g. a paper's defaults
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    callbacks: tuple = ()  # experiment trackers (trackers.TrackerSpec), as Tune's logger callbacks

    @property
    def multi(self) -> bool:
        """True with two objectives (a Pareto front)."""
        return len(self.objectives) > 1

    @property
    def replicated(self) -> bool:
        """True when one sampled recipe becomes several trials (``compare:`` methods, ``seeds:`` > 1)."""
        return bool(self.compare) or self.seeds > 1

    @property
    def grid_size(self) -> int:
        """The points of a grid search (every searched setting a ``grid``); 0 for any other sweep."""
        if self.sampler.kind != "grid":
            return 0
        return math.prod(len(d.values) for d in self.search.values())

    @property
    def group_size(self) -> int:
        """Trials per sampled recipe: one per (seed, compared method)."""
        return max(1, len(self.compare)) * self.seeds

    @property
    def trial_count(self) -> int:
        """Tune trials in the sweep: ``budget.num_samples`` recipes x ``group_size``."""
        return self.budget.num_samples * self.group_size

    def base_config(self) -> dict[str, Any]:
        """The settings every trial shares (progress bars off inside trials unless asked for)."""
        return {"progress": False, **self.fixed}

    def with_overrides(
        self,
        name: Optional[str] = None,
        num_samples: Optional[int] = None,
        max_concurrent: Optional[int] = None,
        optuna_storage: Optional[str] = None,
    ) -> SweepSpec:
        """A copy with the command line's ``--name``, ``--num-samples``, ``--max-concurrent`` and
        ``--optuna-storage`` applied."""
        sampler = self.sampler
        if optuna_storage is not None:
            sampler = dataclasses.replace(sampler, storage=storage_url("optuna-storage", optuna_storage))
        budget = self.budget
        if num_samples is not None:
            budget = dataclasses.replace(budget, num_samples=int_at_least("num-samples", num_samples, 1))
            check_grid_samples(self, num_samples, "num-samples")
        if max_concurrent is not None:
            budget = dataclasses.replace(budget, max_concurrent=int_at_least("max-concurrent", max_concurrent, 1))
        return dataclasses.replace(
            self, name=sweep_name(name, "name") if name is not None else self.name, budget=budget, sampler=sampler
        )

    def smoke(self) -> SweepSpec:
        """A seconds-long version for CI and cluster checks: 1 epoch, 1 cycle, one seed, 2 trials (a compare
        sweep: one recipe per method), the same space otherwise."""
        fixed = {k: v for k, v in self.fixed.items() if k != "target_sparsity"}
        fixed.update(epochs=1, cycles=1)
        search = {k: d for k, d in self.search.items() if k not in fixed}
        samples = max(1, 2 // max(1, len(self.compare)))
        if self.sampler.kind == "grid":
            samples = min(samples, math.prod(len(d.values) for d in (search or self.search).values()))
        budget = dataclasses.replace(
            self.budget, num_samples=samples, max_concurrent=min(2, self.budget.max_concurrent)
        )
        return dataclasses.replace(self, fixed=fixed, search=search or self.search, budget=budget, seeds=1)


# ---- helpers shared with the parser ---------------------------------------------------------------
def check_grid_samples(spec: SweepSpec, num_samples: int, where: str) -> None:
    """A grid search runs each point at most once: ``num_samples`` no larger than the grid (fewer: a random part
    of it; more runs of a point: ``seeds:``)."""
    if spec.grid_size and num_samples > spec.grid_size:
        raise ConfigError(
            where,
            f"{num_samples} recipes, but the grid has {spec.grid_size} points and each runs once; give at most "
            f"{spec.grid_size} (or seeds: to run each point more than once)",
        )


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_type(name: str, value: Any, where: str) -> None:
    """Raise ConfigError unless ``value`` fits the setting's type (ints pass as floats; None if optional)."""
    kind = value_type(name)
    if value is None:
        return  # whether a setting may be null: check_value
    ok = {
        int: is_number(value) and isinstance(value, int),
        float: is_number(value),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
        tuple: isinstance(value, list),
    }[kind]
    if not ok:
        shown = {tuple: "list"}.get(kind, kind.__name__)
        raise ConfigError(where, f"{name} must be a {shown}, got {value!r}")


RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")  # SQLAlchemy dialects (+driver allowed)


def storage_url(where: str, value: Any) -> str:
    """An Optuna storage a sweep's driver can open: an RDB URL (``sqlite:///path``, ``postgresql://...``) or
    the path of a journal file (made absolute); any other URL (an object store) is a ConfigError at ``where``:
    Optuna appends to its storage at every ask and tell, which an object store cannot do."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, "must be an Optuna storage URL (sqlite:///..., postgresql://...) or a journal file")
    value = value.strip()
    if "://" in value:
        scheme = value.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme not in RDB_SCHEMES:
            raise ConfigError(
                where,
                f"{scheme}:// cannot hold an Optuna study (it is appended to at every ask and tell); use an RDB URL "
                "(postgresql://user@host/db, sqlite:///path on a local disk) or a journal file on a shared "
                "filesystem",
            )
        return value
    return os.path.abspath(os.path.expanduser(value))


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
