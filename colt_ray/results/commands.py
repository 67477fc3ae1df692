"""A run's settings as the ``colt-ray ticket`` command line that reproduces them (the report's "best settings").

Every setting that differs from its default becomes its flag (``flag_name``); booleans are ``--x``/``--no-x``,
lists are comma-joined, floats are written in full (``repr``: the shortest text that reads back as the same
float, so the line gives the same run id and the same ticket bit for bit; ``%g`` rounding to 6 digits gave
another run). The seed is the run's own (no flag at the default). Left out: the execution settings (backend,
device, CPUs, address...: they never change the ticket, and a sweep picks them for its own throughput; where
and how the line runs is the reader's choice).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from colt_ray.core.config import RunConfig, default_of, flag_name, flat_field_owners
from colt_ray.results.tables import plain

LEFT_OUT: tuple[str, ...] = ()
EXECUTION = "resources"  # the config section of the execution settings


def ticket_command(run: Mapping[str, Any], out: str = "results/best") -> str:
    """``colt-ray ticket --flag value ... --out OUT`` for the flat settings of ``run`` (a ``runs`` row)."""
    owners = flat_field_owners()
    kept = [k for k in run if k in owners and k not in LEFT_OUT and owners[k] != EXECUTION]
    flat = {k: plain(run[k]) for k in kept}
    given = {k: v for k, v in flat.items() if v is not None or default_of(k) is None}
    cfg = RunConfig.from_recorded(given, run.get("run_id"))  # settings the method resolved: back to their default
    args = ["colt-ray", "ticket"]
    for name, value in cfg.to_flat().items():
        if name not in flat or _same(value, default_of(name)):
            continue
        args += _flag(name, value)
    return shlex.join([*args, "--out", out])


def _flag(name: str, value: Any) -> list[str]:
    flag = f"--{flag_name(name)}"
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag_name(name)}"]
    if value is None:
        return []  # a setting left at "none" where its default is a value: no flag says that
    if isinstance(value, (list, tuple)):
        return [flag, ",".join(map(str, value))]
    return [flag, repr(value) if isinstance(value, float) else str(value)]


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return value == default
