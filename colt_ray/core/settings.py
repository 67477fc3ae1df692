"""How a config field declares itself: ``setting(default, help, ...)`` puts a ``Setting`` (help text, allowed
range or names, a custom check, older flag spellings) in the dataclass field's metadata. ``colt_ray.core.config``
declares every field this way; the command line, sweep YAML checks and validation read it. Pure Python.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from colt_ray.core.errors import ConfigError

Choices = Union[tuple[str, ...], Callable[[], list[str]]]


@dataclass(frozen=True)
class Setting:
    """What a field allows and how it is shown. ``lo``/``hi`` bound numbers (open ends with ``lo_open``/
    ``hi_open``); ``choices`` are names (a tuple, or a callable reading a registry); ``check`` returns an
    error message for a value it refuses; ``default_text`` replaces the printed default (a None default
    that means "the method's own"); ``aliases`` are older flag spellings that still work; ``hash_key``
    is the name the run id hashes (kept when a field is renamed, so run ids stay the same); ``separator``: the
    value is a list of ``choices`` names joined by it (``tweaks``: "label-smoothing,distill"; "" is none)."""

    help: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    choices: Optional[Choices] = None
    check: Optional[Callable[[Any], Optional[str]]] = None
    default_text: Optional[str] = None
    aliases: tuple[str, ...] = ()
    hash_key: Optional[str] = None
    metavar: Optional[str] = None
    separator: Optional[str] = None

    def allowed(self) -> Optional[tuple[str, ...]]:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def accepts(self, item: Any) -> bool:
        """Whether ``item`` is one of the names allowed (a registry's former names included)."""
        registry = getattr(self.choices, "registry", None)
        try:
            return item in (registry() if registry is not None else self.allowed())
        except TypeError:  # an unhashable value (a YAML list where a name belongs)
            return False


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with its ``Setting`` in the metadata."""
    return field(default=default, metadata={"setting": Setting(help, **spec)})


def registry_names(path: str, light: bool = False) -> Callable[[], list[str]]:
    """Names of the registry at ``module:attribute``, read when first needed (most registries import torch).

    ``light``: the registry's module imports no torch (optimizers, schedules, budgets), so its names are read
    wherever a fixed tuple would be: listed in the flag's ``--help`` and checked by ``validate(registries=False)``
    before anything starts. ``names.registry()`` is the registry itself (``--list`` prints its entries' help)."""
    module, attr = path.split(":")

    def registry() -> Any:
        return getattr(importlib.import_module(module), attr)

    def names() -> list[str]:
        return list(registry())

    names.light = light  # type: ignore[attr-defined]
    names.registry = registry  # type: ignore[attr-defined]
    return names


def is_light(choices: Any) -> bool:
    """Whether ``choices`` (a ``Setting.choices``) can be read without importing torch."""
    return not callable(choices) or bool(getattr(choices, "light", False))


def eval_policy_error(value: Any) -> Optional[str]:
    """Why ``value`` is not an ``eval_tickets`` policy (all, final, none, every:N), or None."""
    if value in ("all", "final", "none"):
        return None
    if isinstance(value, str) and value.startswith("every:"):
        n = value[len("every:") :]
        if n.isdigit() and int(n) >= 1:
            return None
    return f"must be all, final, none or every:N (N >= 1), got {value!r}"


def flag_name(name: str) -> str:
    """How a setting is named in messages and on the command line: ``prune_rate`` -> ``prune-rate``."""
    return name.replace("_", "-")


def check_number(label: str, value: float, spec: Setting, integer: bool) -> None:
    """ConfigError unless ``value`` is finite, an integer where one is needed, and inside ``spec``'s range."""
    if not math.isfinite(value):
        raise ConfigError(label, f"must be a finite number, got {value}")
    if integer and float(value) != int(value):
        raise ConfigError(label, f"must be an integer, got {value}")
    lo_bad = spec.lo is not None and (value < spec.lo or (spec.lo_open and value == spec.lo))
    hi_bad = spec.hi is not None and (value > spec.hi or (spec.hi_open and value == spec.hi))
    if lo_bad or hi_bad:
        raise ConfigError(label, f"must be {range_text(spec)}, got {value}")


def range_text(spec: Setting) -> str:
    """``in (0, 1)``, ``>= 1``, ``> 0``: the allowed range of a numeric setting."""
    if spec.lo is not None and spec.hi is not None:
        return f"in {'(' if spec.lo_open else '['}{spec.lo:g}, {spec.hi:g}{')' if spec.hi_open else ']'}"
    if spec.lo is not None:
        return f"{'>' if spec.lo_open else '>='} {spec.lo:g}"
    return f"{'<' if spec.hi_open else '<='} {spec.hi:g}"


def eval_every(policy: str) -> Optional[int]:
    """The N of an ``every:N`` evaluation policy, else None."""
    return int(policy.split(":", 1)[1]) if policy.startswith("every:") else None
