"""Fair comparisons: ``compare:`` runs several ticket methods on the same sampled recipes, ``seeds:`` repeats
each recipe over N seeds.

Every recipe Optuna samples becomes one trial per (seed, method): the same sampled settings, plus the method,
its own fixed settings (``compare: {colt: {shards: 4}, imp: {}}``) and the replicate's seed. A setting that
only some methods read (the ``MethodSpec`` says which: ``reads``) is reset to its default for the others, so
an IMP trial never carries COLT's shard count in its config or run id. Optuna is told one result per recipe:
the objectives averaged over its trials (``group_outcome``). Pure Python: the Ray searcher that applies this
is ``searchers.Replicates``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional

from colt_ray.core.config import RENAMED, check_value, default_of, flat_field_owners
from colt_ray.core.errors import ConfigError
from colt_ray.core.tickets.specs import METHODS, MethodSpec
from colt_ray.parallel.sweep.spec import Dist, SweepSpec, check_type, int_at_least

# settings only some methods read -> the MethodSpec fact that says whether a method reads it (a setting of a
# method's own config section, e.g. jackpot's, is read by the methods that list that section)
METHOD_SETTINGS: dict[str, Callable[[MethodSpec], bool]] = {
    "shards": lambda m: m.uses_shards,
    "split": lambda m: m.uses_shards,
    "vote": lambda m: m.uses_shards,
    "shard_overlap": lambda m: m.uses_shards,
    "shard_steps": lambda m: m.uses_shards,
    "shards_per_actor": lambda m: m.uses_shards,
    "rewind_step": lambda m: m.late_rewind,
    "rewind_schedule": lambda m: m.late_rewind,
    "prune_rate": lambda m: m.default_prune_rate is not None,
}
# the training recipe (data, model, optimisation, retraining): the same for every compared method
SHARED_SECTIONS = ("data", "model", "recipe", "retrain")


def reads(method: MethodSpec, name: str) -> bool:
    """Whether ``method`` reads the flat setting ``name`` (every method reads a setting not listed above)."""
    section = flat_field_owners()[name]
    if any(section in METHODS.get(m).sections for m in METHODS):
        return section in method.sections
    fact = METHOD_SETTINGS.get(name)
    return fact is None or fact(method)


# ---- parsing ---------------------------------------------------------------------------------------
def parse_compare(raw: Any, fixed: dict[str, Any], search: dict[str, Dist]) -> dict[str, dict[str, Any]]:
    """``compare:`` as ``{method: its own fixed settings}``: a list of methods, or a mapping method -> settings."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        for i, name in enumerate(raw):
            if not isinstance(name, str) or name not in METHODS:
                raise ConfigError("compare", f"unknown method {name!r}; valid: {', '.join(METHODS)}")
            if name in raw[:i]:
                raise ConfigError("compare", f"method {name!r} is listed twice")
        raw = dict.fromkeys(raw)
    if not isinstance(raw, dict) or len(raw) < 2:
        raise ConfigError(
            "compare", "needs two or more methods: a list ([colt, imp]) or a mapping ({colt: {shards: 4}, imp: {}})"
        )
    for block in ("fixed", "search"):
        if "method" in {"fixed": fixed, "search": search}[block]:
            raise ConfigError(f"{block}.method", f"compare: runs each listed method; remove method from {block}:")
    out = {}
    for name, settings in raw.items():
        if not isinstance(name, str) or name not in METHODS:
            raise ConfigError("compare", f"unknown method {name!r}; valid: {', '.join(METHODS)}")
        out[name] = _method_settings(name, settings, fixed, search)
    return out


def _method_settings(method: str, raw: Any, fixed: dict[str, Any], search: dict[str, Dist]) -> dict[str, Any]:
    where = f"compare.{method}"
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a mapping of setting name -> value (settings only this method gets)")
    owners, spec, out = flat_field_owners(), METHODS.get(method), {}
    for key, value in raw.items():
        key = RENAMED.get(key, key)
        at = f"{where}.{key}"
        if key not in owners:
            raise ConfigError(at, f"unknown setting; valid: {', '.join(sorted(owners))}")
        if key in ("method", "seed"):
            raise ConfigError(at, "is set by compare:/seeds: for each trial, not per method")
        if owners[key] in SHARED_SECTIONS:
            raise ConfigError(at, "is part of the training recipe, the same for every method: put it under fixed:")
        if key in fixed or key in search:
            raise ConfigError(at, f"is also under {'fixed' if key in fixed else 'search'}:; give it in one place")
        if not reads(spec, key):
            raise ConfigError(at, f"{method} does not read {key}")
        check_type(key, value, at)
        check_value(key, value, at)
        out[key] = value
    return out


def parse_seeds(raw: Any, search: dict[str, Dist]) -> int:
    """``seeds:``: how many seeds each sampled recipe runs with (1: the fixed or default seed only)."""
    seeds = int_at_least("seeds", 1 if raw is None else raw, 1)
    if seeds > 1 and "seed" in search:
        raise ConfigError("search.seed", "seeds: N gives each replicate its seed; remove seed from search:")
    return seeds


# ---- expansion -------------------------------------------------------------------------------------
def first_seed(spec: SweepSpec) -> int:
    """The first replicate's seed: the fixed ``seed``, else the default; replicate i runs with this + i."""
    return int(spec.fixed.get("seed", default_of("seed")))


def method_settings(spec: SweepSpec, method: str) -> dict[str, Any]:
    """What a trial of ``method`` sets on top of a sampled recipe: the method, its own settings, and the
    default of every setting of the space that the method does not read."""
    unread = {k: default_of(k) for k in (*spec.fixed, *spec.search) if not reads(METHODS.get(method), k)}
    return {**unread, **spec.compare[method], "method": method}


def trial_variants(spec: SweepSpec) -> list[dict[str, Any]]:
    """The settings each trial of one sampled recipe adds to it, in launch order: seed by seed, method by
    method (``spec.group_size`` entries; ``[{}]`` for a plain sweep)."""
    methods = list(spec.compare) or [None]
    seeds = [first_seed(spec) + i for i in range(spec.seeds)] if spec.seeds > 1 else [None]
    out = []
    for seed in seeds:
        for method in methods:
            variant = method_settings(spec, method) if method is not None else {}
            if seed is not None:
                variant["seed"] = seed
            out.append(variant)
    return out


def group_outcome(results: list[Optional[dict[str, Any]]], metrics: list[str]) -> dict[str, Any]:
    """What the searcher is told about a recipe once all its trials ended (``results``: each trial's last
    result, None if it failed): failed if any failed; pruned (no result) if any was stopped before its
    search finished; else each metric averaged over the trials."""
    if any(r is None for r in results):
        return {"result": None, "error": True}
    if not all(r.get("search_done") for r in results):
        return {"result": None, "error": False}
    mean = {m: math.fsum(float(r.get(m, math.nan)) for r in results) / len(results) for m in metrics}
    return {"result": {**mean, "search_done": True}, "error": False}
