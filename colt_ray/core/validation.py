"""Validation of a ``RunConfig``: each field against its own ``Setting``, then the rules that tie fields
together. Every failure is one ``ConfigError`` line naming the field (as its flag) and what is allowed."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Optional

from colt_ray.core.config import (
    PRUNE_GROUPS,
    ResourcesConfig,
    RunConfig,
    default_of,
    item_type,
    setting_of,
    value_type,
)
from colt_ray.core.errors import ConfigError
from colt_ray.core.optim import OPTIMIZERS
from colt_ray.core.schedules import SCHEDULES
from colt_ray.core.settings import check_number, flag_name, is_light


def check_value(name: str, value: Any, where: Optional[str] = None) -> None:
    """ConfigError unless ``value`` is allowed for setting ``name`` (range, finiteness, integer, choices).
    The same check serves the command line, sweep YAML (``where`` = its key path) and ``validate``."""
    spec, label = setting_of(name), where or flag_name(name)
    if value is None:
        if default_of(name) is not None:
            raise ConfigError(label, f"{name} cannot be null")
        return
    items = value if isinstance(value, (tuple, list)) else (value,)
    if spec.separator is not None and isinstance(value, str):
        items = tuple(x.strip() for x in value.split(spec.separator) if x.strip())
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            check_number(
                label, item, spec, integer=(item_type(name) if value_type(name) is tuple else value_type(name)) is int
            )
        allowed = spec.allowed()
        if allowed is not None and not spec.accepts(item):
            raise ConfigError(label, f"unknown {item!r}; valid: {', '.join(allowed)}")
    if spec.check is not None:
        why = spec.check(value)
        if why:
            raise ConfigError(label, why)


def validate(cfg: RunConfig, num_classes: Optional[int] = None, *, registries: bool = True) -> None:
    """Check every setting that can be checked without loading data; raise ConfigError on the first bad one.

    Each field is checked against its own ``Setting`` first; the rules that tie fields together follow.
    ``num_classes`` (when known) also checks that a class split can serve the shard count. ``registries``
    False skips the names of registries whose modules import torch (datasets, architectures, splits,
    activations; ``settings.is_light``): the checks left need no torch import, so the command line runs them
    before it starts anything.
    """
    for name, value in cfg.to_flat().items():
        if registries or is_light(setting_of(name).choices) or name == "method":
            check_value(name, value)
    spec, t, p = cfg.method, cfg.ticket, cfg.prune
    if not p.prune_groups:
        raise ConfigError("prune-groups", f"must name at least one of {', '.join(PRUNE_GROUPS)}")
    if t.vote is not None and not 1 <= t.vote <= cfg.num_shards:
        raise ConfigError("vote", f"must be in [1, shards={cfg.num_shards}], got {t.vote}")
    for flag, changed in (("rewind-step", bool(t.rewind_step)), ("rewind-schedule", t.rewind_schedule != "continue")):
        if changed and not spec.late_rewind:
            raise ConfigError(
                flag, f"is a {_methods_with('late_rewind')} setting; {t.method.upper()} rewinds to the initialisation"
            )
    _validate_shard_variants(cfg)
    if spec.uses_shards and t.split == "class" and "output" in p.prune_groups and t.shards > 1:
        raise ConfigError("prune-groups", "'output' cannot be pruned under a class split: shard heads differ")
    if num_classes is not None:
        check_classes(cfg, num_classes)
    r = cfg.recipe
    if r.epochs > 0 and r.warmup >= r.epochs:
        raise ConfigError(
            "warmup-epochs",
            f"{r.warmup_epochs:g} fills the whole {r.epochs}-epoch training (the learning rate would never reach "
            "--lr); must be below --epochs",
        )
    if SCHEDULES.get(r.schedule).needs_milestones and not r.milestones:
        raise ConfigError("milestones", f"schedule {r.schedule!r} needs at least one milestone epoch")
    _validate_tweaks(cfg)
    _validate_jackpot(cfg)
    _validate_resources(cfg.resources, cfg)


def check_classes(cfg: RunConfig, num_classes: int) -> None:
    """The check that needs the data: a class split can give each shard at least one class."""
    t = cfg.ticket
    if cfg.method.uses_shards and t.split == "class" and t.shards > num_classes:
        raise ConfigError(
            "shards", f"a class split of {num_classes} classes allows at most {num_classes} shards, got {t.shards}"
        )


def _methods_with(flag: str) -> str:
    from colt_ray.core.tickets.specs import methods_with

    return "/".join(n.upper() for n in methods_with(lambda spec: getattr(spec, flag)))


def _validate_shard_variants(cfg: RunConfig) -> None:
    """COLT's own variants (docs/algorithms.md, COLT variants): read by shard-training methods only, and not
    by stacked shard training (which keeps the paper's shard trainings)."""
    t, res = cfg.ticket, cfg.resources
    overlap, match, rewind = t.shard_overlap > 0, t.shard_steps != "epochs", t.rewind_step > 0
    if not cfg.method.uses_shards:
        for flag, on in (("shard-overlap", overlap), ("shard-steps", match)):
            if on:
                raise ConfigError(
                    flag, f"is a {_methods_with('uses_shards')} setting; {t.method.upper()} trains no shards"
                )
        return
    if rewind and "distill" in cfg.retrain.names:  # the teacher is the dense model of theta_0, not of theta_k
        raise ConfigError("tweaks", "distill does not go with COLT's --rewind-step (its teacher trains from theta_0)")
    if res.backend == "batched" or res.shards_per_actor > 1:
        for flag, on in (("shard-steps", match), ("rewind-step", rewind)):
            if on:
                raise ConfigError(
                    flag,
                    "is not supported by stacked shard training (--backend batched, "
                    "--shards-per-actor > 1); use --backend local or ray",
                )


def _validate_tweaks(cfg: RunConfig) -> None:
    if cfg.retrain.active and not cfg.method.trains_weights:
        field = "tweaks" if cfg.retrain.names else "activation"
        raise ConfigError(
            field,
            f"retraining tweaks apply when a ticket is retrained; a {cfg.ticket.method} never retrains its weights "
            f"(valid with {_methods_with('trains_weights').lower().replace('/', ', ')})",
        )


def _validate_jackpot(cfg: RunConfig) -> None:
    j, spec = cfg.jackpot, cfg.method
    if "jackpot" not in spec.sections:
        changed = [f.name for f in fields(j) if getattr(j, f.name) != f.default]
        if changed:
            raise ConfigError(flag_name(changed[0]), "is a jackpot setting; use it with --method jackpot")
        return
    if cfg.prune.prune_rate is not None and spec.default_prune_rate is None:
        raise ConfigError("prune-rate", "jackpot prunes once, to --target-sparsity (default 0.9); drop --prune-rate")


def _validate_resources(res: ResourcesConfig, cfg: RunConfig) -> None:
    if cfg.recipe.amp and res.device != "cuda":
        # bfloat16 autocast is for GPUs: on a CPU it gave no consistent speed-up (docs/batched.md), only other numerics
        raise ConfigError("amp", "needs --device cuda")
    if res.shards_per_actor > 1 and (cfg.backend != "ray" or not cfg.method.uses_shards):
        raise ConfigError(
            "shards-per-actor",
            "groups the shard actors of a COLT run on --backend ray "
            "(--backend batched stacks every shard in one process)",
        )
    if res.backend == "batched" and OPTIMIZERS.get(cfg.recipe.optimizer).stacked is None:
        stacked = [n for n in OPTIMIZERS if OPTIMIZERS.get(n).stacked is not None]
        raise ConfigError("optimizer", f"--backend batched has a stacked step for {', '.join(stacked)} only")
    if res.backend == "batched" and not cfg.method.uses_shards:
        raise ConfigError(
            "backend", f"batched stacks a method's shard models; {cfg.ticket.method} trains none (use local or ray)"
        )
    if res.backend == "ray" and res.device == "cuda" and res.gpus_per_shard <= 0:
        # an actor that reserved no GPU trains on the CPU (a GPU it used would be unaccounted for by Ray)
        raise ConfigError(
            "gpus-per-shard", "--device cuda on the ray backend needs a GPU share per shard, e.g. --gpus-per-shard 0.25"
        )
