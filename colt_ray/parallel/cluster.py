"""Starting or joining Ray, kept light (Ray and the config only, no torch), so that the command line can start
Ray while the heavy modules import."""

from __future__ import annotations

import logging
import os
from typing import Optional

import ray

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import ConfigError, one_line
from colt_ray.parallel.resources import local_num_cpus


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, *, detect: bool = False) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``; with ``detect``, also a cluster started by ``ray start`` on this
    machine), else start a local Ray with ``num_cpus`` (default: the machine's), quietly. Does nothing if Ray
    is up already (a test, a Tune trial). True when this call connected or started it."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address == "local":
        address = None
    elif address is None and detect:
        address = _running_cluster()
    quiet = {"logging_level": logging.ERROR, "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as exc:  # unreachable, refused, or its auth token missing
            raise ConfigError("address", f"cannot join the Ray cluster at {address}: {one_line(exc, 300)}") from None
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def _running_cluster() -> Optional[str]:
    """ "auto" when a Ray cluster was started on this machine with ``ray start``, else None."""
    try:
        from ray._private.services import find_gcs_addresses

        return "auto" if find_gcs_addresses() else None
    except Exception:  # a private API: without it, start a local Ray as before
        return None


def init_for(cfg: RunConfig) -> bool:
    """``init_ray`` for one run: its address, or a local Ray with enough CPUs for all its trainers."""
    return init_ray(cfg.resources.address, local_num_cpus(cfg, os.cpu_count() or 1))
