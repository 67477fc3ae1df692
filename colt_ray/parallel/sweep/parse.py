"""Read a search space file (``search_spaces/*.yaml``) into a :class:`SweepSpec`, checking every key.

Every problem is a one-line ``ConfigError`` naming the key and what is allowed (unknown keys and settings
list the valid ones). The format is documented in ``docs/sweeps.md``. Pure Python + PyYAML.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, Optional

from colt_ray.core.config import RENAMED, check_value, flat_field_owners, upgrade_flat, value_type
from colt_ray.core.errors import ConfigError, one_line
from colt_ray.parallel.sweep.compare import parse_compare, parse_seeds
from colt_ray.parallel.sweep.metrics import METRICS
from colt_ray.parallel.sweep.spec import (
    BUDGET_KEYS,
    DIST_KINDS,
    INT_KINDS,
    MANY_RECIPES,
    MODES,
    MULTI_OBJECTIVE_SAMPLERS,
    OBJECTIVE_KEYS,
    QMC_TYPES,
    SAMPLER_KEYS,
    SAMPLER_OPTIONS,
    SAMPLERS,
    SCHEDULER_KEYS,
    SINGLE_OBJECTIVE_SAMPLERS,
    TIME_ATTRS,
    TOP_KEYS,
    VALUE_KINDS,
    Budget,
    Dist,
    Objective,
    SamplerSpec,
    SchedulerSpec,
    SweepSpec,
    check_grid_samples,
    check_type,
    int_at_least,
    is_number,
    storage_url,
    sweep_name,
)
from colt_ray.parallel.sweep.trackers import parse_callbacks


# ---- loading --------------------------------------------------------------------------------------
def load_spec(path: str, settings: Sequence[str] = ()) -> SweepSpec:
    """Read and check the YAML file ``path``; raises ConfigError (one line) on any problem. ``settings``
    (``KEY=VALUE``, the command line's ``--set``) fix settings over the file's: see ``apply_settings``."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError("space", f"cannot read {path}: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError("space", f"{path} is not valid YAML: {one_line(e)}") from e
    return parse_spec(apply_settings(data, settings), source=path)


def apply_settings(data: Any, settings: Sequence[str]) -> Any:
    """The parsed YAML with each ``KEY=VALUE`` fixed under ``fixed:`` (a searched setting becomes fixed).
    VALUE is read as YAML (``0.1``, ``true``, ``[conv, linear]``, ``null``); each is checked like the file's."""
    import yaml

    if not settings:
        return data
    if not isinstance(data, dict):
        return data  # parse_spec says what is wrong with the file
    fixed, search = dict(data.get("fixed") or {}), dict(data.get("search") or {})
    owners = flat_field_owners()
    for item in settings:
        key, sep, text = item.partition("=")
        key = RENAMED.get(key.strip(), key.strip())
        where = f"set.{key or item}"
        if not sep or not key:
            raise ConfigError("set", f"expected KEY=VALUE (e.g. data_root=data/mnist10k.npz), got {item!r}")
        if key not in owners:
            raise ConfigError(where, f"unknown setting; valid: {', '.join(sorted(owners))}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(where, f"{text!r} is not a value: {one_line(e)}") from e
        check_type(key, value, where)
        check_value(key, _absolute_root(key, value), where)
        fixed[key] = value
        search.pop(key, None)
    return {**data, "fixed": fixed, "search": search}


def parse_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Build a :class:`SweepSpec` from the parsed YAML mapping (no data or Ray checks; see ``checks``)."""
    if not isinstance(data, dict):
        raise ConfigError("space", f"{source} must be a mapping with keys {', '.join(TOP_KEYS)}")
    _known(data, TOP_KEYS, "", "key")
    if "name" not in data:
        raise ConfigError("name", f"missing in {source}; a sweep needs a name (letters, digits, _ . = + -)")
    fixed = {k: _absolute_root(k, v) for k, v in _settings(data.get("fixed") or {}, "fixed").items()}
    for key, value in fixed.items():
        check_type(key, value, f"fixed.{key}")
        check_value(key, value, f"fixed.{key}")
    search = {k: _dist(k, v) for k, v in _settings(data.get("search") or {}, "search").items()}
    both = sorted(set(fixed) & set(search))
    if both:
        raise ConfigError(f"search.{both[0]}", "is also in fixed:; a setting is either fixed or searched")
    if not search:
        raise ConfigError("search", "must declare at least one distribution, e.g. lr: {logfloat: [0.01, 0.2]}")
    objectives = _objectives(data.get("objectives"), fixed)
    _check_acc_objectives(objectives, fixed, search)
    allow_test = data.get("allow_test_selection", False)
    if not isinstance(allow_test, bool):
        raise ConfigError("allow_test_selection", f"must be true or false, got {allow_test!r}")
    compare = parse_compare(data.get("compare"), fixed, search)
    seeds = parse_seeds(data.get("seeds"), search)
    scheduler = _scheduler(data.get("scheduler"), objectives, fixed, search)
    if scheduler is not None and (compare or seeds > 1):
        raise ConfigError(
            "scheduler",
            "ASHA stops single trials, leaving a recipe's methods and seeds unequal; remove it (or compare:/seeds:)",
        )
    _check_selection(objectives, scheduler, fixed, search, allow_test)
    budget = _budget(data.get("budget") or {})
    sampler = _sampler(data.get("sampler"), len(objectives), budget.num_samples, search)
    if sampler.kind == "grid" and "num_samples" not in (data.get("budget") or {}):
        budget = dataclasses.replace(budget, num_samples=math.prod(len(d.values) for d in search.values()))
    if sampler.kind == "grid" and data.get("points_to_evaluate") is not None:
        raise ConfigError("points_to_evaluate", "a grid search tries every point of its grid; remove it")
    spec = SweepSpec(
        name=sweep_name(data["name"], "name"),
        fixed=fixed,
        search=search,
        objectives=objectives,
        budget=budget,
        sampler=sampler,
        scheduler=scheduler,
        allow_test_selection=allow_test,
        compare=compare,
        seeds=seeds,
        points_to_evaluate=_points(data.get("points_to_evaluate"), search),
        callbacks=parse_callbacks(data.get("callbacks")),
        description=str(data.get("description") or ""),
        source=source,
    )
    check_grid_samples(spec, budget.num_samples, "budget.num_samples")
    return spec


# ---- pieces ---------------------------------------------------------------------------------------
def _settings(block: Any, where: str) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise ConfigError(where, "must be a mapping of setting name -> value")
    owners = flat_field_owners()
    block = {RENAMED.get(k, k): v for k, v in block.items()}  # former names of renamed settings still read
    for key in block:
        if key not in owners:
            raise ConfigError(f"{where}.{key}", f"unknown setting; valid: {', '.join(sorted(owners))}")
    if where == "fixed":
        block = upgrade_flat(block)
    return dict(block)


def _dist(name: str, raw: Any) -> Dist:
    where = f"search.{name}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(
            where,
            "must be one of {float: [lo, hi]}, {logfloat: [lo, hi]}, {int: [lo, hi]}, {logint: [lo, hi]}, "
            "{choice: [a, b, ...]}, {grid: [a, b, ...]}",
        )
    kind, values = next(iter(raw.items()))
    if kind not in DIST_KINDS:
        raise ConfigError(where, f"unknown distribution {kind!r}; valid: {', '.join(DIST_KINDS)}")
    if kind in VALUE_KINDS:
        return Dist(kind, _choices(where, values, name, kind))
    if not isinstance(values, list) or len(values) != 2 or not all(is_number(v) for v in values):
        raise ConfigError(where, f"{kind} needs [lo, hi] with two numbers, got {values!r}")
    lo, hi = values
    if kind in INT_KINDS and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(where, f"{kind} needs integer bounds, got {values!r}")
    if lo == hi:
        raise ConfigError(where, f"empty range [{lo}, {hi}]; put a single value under fixed:")
    if lo > hi:
        raise ConfigError(where, f"inverted range [{lo}, {hi}]: lo must be below hi")
    if kind in ("logfloat", "logint") and lo <= 0:
        raise ConfigError(where, f"{kind} needs lo > 0, got {lo}")
    if kind not in INT_KINDS and value_type(name) is int:
        raise ConfigError(where, f"{name} is an integer setting; use {{int: [lo, hi]}} or {{logint: [lo, hi]}}")
    for v in values:
        check_type(name, v, where)
        check_value(name, v, where)
    return Dist(kind, (lo, hi))


def _points(raw: Any, search: dict[str, Dist]) -> tuple[dict[str, Any], ...]:
    """``points_to_evaluate``: recipes Optuna tries first, each giving every searched setting a value its
    distribution can draw (Ray's OptunaSearch enqueues them as they are, and refuses a partial one)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise ConfigError("points_to_evaluate", "must be a list of mappings {setting: value}, one per recipe")
    points = []
    for i, point in enumerate(raw):
        where = f"points_to_evaluate[{i}]"
        point = {RENAMED.get(k, k): v for k, v in point.items()}  # former names, as under search:
        _known(point, tuple(search), f"{where}.", "searched setting")
        missing = [k for k in search if k not in point]
        if missing:
            raise ConfigError(where, f"gives no value for {', '.join(missing)}: a point names every searched setting")
        out = {}
        for name, value in point.items():
            dist, at = search[name], f"{where}.{name}"
            if dist.kind in VALUE_KINDS:
                (value,) = _choices(at, [value], name)
                if value not in dist.values:
                    raise ConfigError(at, f"{value!r} is not one of the choices {list(dist.values)!r}")
            else:
                lo, hi = dist.values
                if not is_number(value) or (dist.kind in INT_KINDS and not isinstance(value, int)):
                    kind = "an integer" if dist.kind in INT_KINDS else "a number"
                    raise ConfigError(at, f"must be {kind} in [{lo}, {hi}], got {value!r}")
                if not lo <= value <= hi:
                    raise ConfigError(at, f"{value} is outside the searched range [{lo}, {hi}]")
            out[name] = value
        points.append(out)
    return tuple(points)


def _choices(where: str, values: Any, name: str, kind: str = "choice") -> tuple:
    """The choices of a searched setting. A list setting's choices are lists (``[[conv, linear], [linear]]``)
    or comma-separated strings; they are searched as the strings (Optuna's choices are scalars)."""
    if not isinstance(values, list) or not values:
        raise ConfigError(where, f"{kind} needs a non-empty list, e.g. {{{kind}: [class, random]}}")
    if value_type(name) is tuple:
        values = [",".join(map(str, v)) if isinstance(v, list) else v for v in values]
    for v in values:
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise ConfigError(where, f"choices must be numbers, strings, booleans or null, got {v!r}")
        if name == "eval_tickets" and isinstance(v, bool):
            v = "all" if v else "none"
        if value_type(name) is tuple and isinstance(v, str):
            v = [x.strip() for x in v.split(",") if x.strip()]
        check_type(name, v, where)
        check_value(name, v, where)
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(where, f"repeated choice in {values!r}")
    return tuple(_absolute_root(name, v) for v in values)


def _objectives(raw: Any, fixed: dict[str, Any]) -> tuple[Objective, ...]:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or len(raw) not in (1, 2):
        raise ConfigError("objectives", "give one ({metric: acc_at_target, mode: max}) or two (accuracy and sparsity)")
    out = []
    for i, item in enumerate(raw):
        where = f"objectives[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(where, "must be a mapping like {metric: acc, mode: max}")
        _known(item, OBJECTIVE_KEYS, where + ".", "key")
        metric = _metric(item.get("metric"), where + ".metric")
        mode = _choice(item.get("mode", METRICS.get(metric).mode), MODES, where + ".mode")
        at_target = METRICS.get(metric).target
        target = item.get("target", fixed.get("target_sparsity")) if at_target else None
        if at_target and not (is_number(target) and 0 < target < 1):
            raise ConfigError(
                where + ".target", f"{metric} needs a target sparsity in (0, 1) (or fixed target_sparsity)"
            )
        out.append(Objective(metric, mode, float(target) if target is not None else None))
    if len({o.metric for o in out}) != len(out):
        raise ConfigError("objectives", "the two objectives must be different metrics")
    return tuple(out)


def _check_acc_objectives(objectives: tuple[Objective, ...], fixed: dict[str, Any], search: dict[str, Dist]) -> None:
    """An accuracy objective needs its tickets evaluated: every one (``eval_tickets: all``), or the final one
    when every accuracy objective is at the target the runs stop at (the final ticket is the first past it)."""
    acc = [o for o in objectives if METRICS.get(o.metric).accuracy]
    policy = fixed.get("eval_tickets", "all")
    stop = fixed.get("target_sparsity")
    final_is_enough = policy == "final" and all(o.target is not None and o.target == stop for o in acc)
    if acc and ("eval_tickets" in search or (policy != "all" and not final_is_enough)):
        raise ConfigError(
            "eval_tickets",
            "an accuracy objective needs eval_tickets: all (every ticket trained), or final when every accuracy "
            "objective is at the fixed target_sparsity the runs stop at",
        )


def _check_selection(
    objectives: tuple[Objective, ...],
    scheduler: Optional[SchedulerSpec],
    fixed: dict[str, Any],
    search: dict[str, Dist],
    allow_test: bool,
) -> None:
    """The test set never selects (objectives, ASHA) unless ``allow_test_selection: true``; a validation
    metric needs a validation split."""
    used = [(f"objectives[{i}].metric", o.metric) for i, o in enumerate(objectives)]
    if scheduler is not None:
        used.append(("scheduler.metric", scheduler.metric))
    for where, metric in used:
        entry = METRICS.get(metric)
        if entry.test and not allow_test:
            raise ConfigError(
                where,
                f"{metric} is measured on the test set, which must not select; use {entry.instead} with val_fraction "
                "> 0, or set allow_test_selection: true",
            )
        if entry.validation and not (fixed.get("val_fraction", 0) or "val_fraction" in search):
            raise ConfigError(where, f"{metric} needs a validation split: set val_fraction (e.g. 0.1) under fixed:")


def _budget(raw: Any) -> Budget:
    if not isinstance(raw, dict):
        raise ConfigError("budget", f"must be a mapping with keys {', '.join(BUDGET_KEYS)}")
    _known(raw, BUDGET_KEYS, "budget.", "key")
    d = Budget()
    return Budget(
        num_samples=int_at_least("budget.num_samples", raw.get("num_samples", d.num_samples), 1),
        max_concurrent=int_at_least("budget.max_concurrent", raw.get("max_concurrent", d.max_concurrent), 1),
        max_failures=int_at_least("budget.max_failures", raw.get("max_failures", d.max_failures), 0),
    )


def _sampler(raw: Any, n_objectives: int, num_samples: int, search: dict[str, Dist]) -> SamplerSpec:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError("sampler", f"must be a mapping with keys {', '.join(SAMPLER_KEYS)}")
    _known(raw, SAMPLER_KEYS, "sampler.", "key")
    grids = [k for k, d in search.items() if d.kind == "grid"]
    if grids:
        default = "grid"
    else:
        default = "nsga2" if n_objectives > 1 and num_samples >= MANY_RECIPES else "tpe"
    kind = _choice(raw.get("kind", default), SAMPLERS, "sampler.kind")
    if grids and kind != "grid":
        raise ConfigError(
            "sampler.kind", f"search.{grids[0]} is a grid, tried point by point by Optuna's GridSampler; remove kind"
        )
    if kind == "grid":
        others = [k for k, d in search.items() if d.kind != "grid"]
        if others:
            raise ConfigError(
                f"search.{others[0]}",
                "a grid search tries every combination of values: give it {grid: [a, b, ...]} too (or use choice "
                "everywhere to sample)",
            )
    if kind in MULTI_OBJECTIVE_SAMPLERS and n_objectives < 2:
        raise ConfigError("sampler.kind", f"{kind} is for two objectives; use tpe, gp, cmaes, qmc or random for one")
    if kind in SINGLE_OBJECTIVE_SAMPLERS and n_objectives > 1:
        raise ConfigError("sampler.kind", f"{kind} is for one objective; use tpe, gp, nsga2, qmc or random for two")
    seed = raw.get("seed")
    seed = None if seed is None else int_at_least("sampler.seed", seed, 0)
    options = []
    for key, kinds in SAMPLER_OPTIONS.items():
        if key not in raw:
            continue
        where, value = f"sampler.{key}", raw[key]
        if kind not in kinds:
            raise ConfigError(where, f"only applies to kind: {' or '.join(kinds)}")
        if key in ("multivariate", "group", "constant_liar", "scramble"):
            if not isinstance(value, bool):
                raise ConfigError(where, f"must be true or false, got {value!r}")
        elif key == "qmc_type":
            value = _choice(value, QMC_TYPES, where)
        else:
            value = int_at_least(where, value, 2 if key == "population_size" else 0)
        options.append((key, value))
    if dict(options).get("group") and not dict(options).get("multivariate"):
        raise ConfigError("sampler.group", "needs multivariate: true (Optuna groups the multivariate TPE's parameters)")
    storage = raw.get("storage")
    storage = None if storage is None else storage_url("sampler.storage", storage)
    return SamplerSpec(kind, seed, tuple(options), storage)


def _scheduler(
    raw: Any, objectives: tuple[Objective, ...], fixed: dict[str, Any], search: dict[str, Dist]
) -> Optional[SchedulerSpec]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("scheduler", f"must be a mapping with keys {', '.join(SCHEDULER_KEYS)}")
    _known(raw, SCHEDULER_KEYS, "scheduler.", "key")
    _choice(raw.get("kind", "asha"), ("asha",), "scheduler.kind")
    if len(objectives) > 1 and "metric" not in raw:
        raise ConfigError("scheduler.metric", "ASHA is single-objective: name the one metric it compares (e.g. acc)")
    metric = _metric(raw.get("metric", objectives[0].metric), "scheduler.metric")
    if METRICS.get(metric).target and not any(o.target for o in objectives) and "target_sparsity" not in fixed:
        raise ConfigError(
            "scheduler.metric", "acc_at_target needs a target: an acc_at_target objective or fixed target_sparsity"
        )
    same = [o.mode for o in objectives if o.metric == metric]
    mode = _choice(raw.get("mode", same[0] if same else METRICS.get(metric).mode), MODES, "scheduler.mode")
    time_attr = _time_attr(raw, fixed, search)
    top = 100 if time_attr == "sparsity_pct" else None  # percent sparsity ends at 100
    grace = int_at_least("scheduler.grace_period", raw.get("grace_period", 20 if top else 1), 1)
    factor = int_at_least("scheduler.reduction_factor", raw.get("reduction_factor", 2), 2)
    max_t = int_at_least("scheduler.max_t", raw.get("max_t", top or 1000), grace)
    if top and max_t > top:
        raise ConfigError("scheduler.max_t", f"time_attr sparsity_pct ends at 100 (percent), got {max_t}")
    return SchedulerSpec(metric, mode, grace, factor, max_t, time_attr=time_attr)


def _time_attr(raw: dict, fixed: dict[str, Any], search: dict[str, Dist]) -> str:
    """ASHA's axis: ``sparsity_pct`` when trials prune at different rates (at equal cycles a faster pruner is
    sparser, so it would look worse and be stopped), else ``cycle``; the YAML may say so explicitly."""
    unequal = "prune_rate" in search or ("method" in search and "prune_rate" not in fixed)
    default = "sparsity_pct" if unequal else "cycle"
    time_attr = _choice(raw.get("time_attr", default), TIME_ATTRS, "scheduler.time_attr")
    if unequal and time_attr == "cycle":
        raise ConfigError(
            "scheduler.time_attr",
            "trials prune at different rates, so equal cycles mean unequal sparsity; use sparsity_pct",
        )
    if unequal and "time_attr" not in raw and ("grace_period" in raw or "max_t" in raw):
        raise ConfigError(
            "scheduler.time_attr",
            "with prune rates that differ, ASHA's rungs are in percent sparsity, not cycles: add time_attr: "
            "sparsity_pct and give grace_period/max_t in percent (e.g. grace_period: 20)",
        )
    return time_attr


# ---- small checks ---------------------------------------------------------------------------------
def _known(block: dict, valid: tuple[str, ...], prefix: str, what: str) -> None:
    for key in block:
        if key not in valid:
            raise ConfigError(f"{prefix}{key}", f"unknown {what}; valid: {', '.join(valid)}")


def _metric(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in METRICS:
        raise ConfigError(where, f"unknown metric {value!r}; valid: {', '.join(METRICS)}")
    return value


def _choice(value: Any, valid: tuple[str, ...], where: str) -> str:
    if value not in valid:
        raise ConfigError(where, f"unknown {value!r}; valid: {', '.join(valid)}")
    return value


def _absolute_root(name: str, value: Any) -> Any:
    """``data_root`` relative to where the sweep is started: trials run in other directories."""
    if name == "data_root" and isinstance(value, str) and "://" not in value:
        return os.path.abspath(os.path.expanduser(value))
    return value
