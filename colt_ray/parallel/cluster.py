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
    else:  # "local" explicitly: with no address Ray itself would join a `ray start` cluster and then refuse num_cpus
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    return True


def stop_ray() -> None:
    """``ray.shutdown()``, a second sooner when this process started the Ray: Ray stops its processes one after
    another, each given a second to exit on SIGTERM, and its autoscaler monitor always takes that second (its
    SIGTERM handler reports to the GCS, which Ray stopped just before it). A local Ray's monitor has nothing to
    save, so it is killed outright first. Falls back to the plain shutdown if Ray's internals differ."""
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    try:
        if node is not None and node.is_head():
            for info in node.all_processes.get("monitor", []):
                if info.process.poll() is None:
                    info.process.kill()
                    info.process.wait(timeout=5)
    except Exception:  # noqa: BLE001 - a private structure: stop Ray the ordinary way
        pass
    ray.shutdown()


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
