"""Entry points of the Ray backend.

* ``run_ray(prepared, sink)``: the CLI's ``--backend ray``. Starts (or joins) Ray, runs the ``Coordinator``
  as an actor and streams its records back; the driver's sink writes them and prints the progress line.
* ``run_on_ray(prepared, sink, resume=None, placement_group=None)``: the coordinator in this process, its
  trainer actors on Ray. For a Tune trial function: the trainers go to the last k bundles of the trial's
  placement group (see ``resources.placement_bundles``), and the sink may also ``tune.report``.

Both give the same records, masks and metrics (timing aside) as ``run_local`` for the same config.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Optional

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import RunError
from colt_ray.core.tickets.methods import Resume, Sink
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.search import Prepared
from colt_ray.parallel.actors import create_actor
from colt_ray.parallel.coordinator import Coordinator
from colt_ray.parallel.resources import (
    DEFAULT_RESTARTS,
    coordinator_resources,
    cpus_needed,
    fit_to_cluster,
    local_num_cpus,
)

Echo = Callable[[str], None]


class CoordinatorLostError(RunError):
    """The coordinator actor itself died (its node failed, or it ran out of memory)."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def init_ray(cfg: RunConfig) -> bool:
    """Join ``cfg.resources.address`` (or ``$RAY_ADDRESS``), else start a local Ray sized for the run,
    quietly. Does nothing if Ray is already up (a test, a Tune trial). True when this call started it."""
    if ray.is_initialized():
        return False
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.ERROR, "log_to_driver": True}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=local_num_cpus(cfg, os.cpu_count() or 1), include_dashboard=False, **quiet)
    return True


def fit(cfg: RunConfig, echo: Echo = _stderr) -> RunConfig:
    """``cfg`` adapted to the connected cluster: no GPU request without GPUs (said on stderr)."""
    return fit_to_cluster(cfg, float(ray.cluster_resources().get("GPU", 0)), echo)


def run_on_ray(prepared: Prepared, sink: Sink, resume: Optional[Resume] = None, *,
               placement_group: Optional[PlacementGroup] = None, restarts: int = DEFAULT_RESTARTS,
               echo: Echo = _stderr) -> CycleRecord:
    """Run ``prepared`` with the coordinator in this process and one trainer actor per shard; returns the
    last cycle's record. ``sink`` gets every record as its cycle ends (write it, report it). ``resume``
    continues after a completed cycle. ``placement_group`` None: the current one (inside a Tune trial,
    the trial's), else none. Starts a local Ray if none is running. The actors are stopped at the end."""
    init_ray(prepared.cfg)
    cfg = fit(prepared.cfg, echo)
    with Coordinator(cfg, prepared=prepared, restarts=restarts, placement_group=placement_group) as coord:
        return coord.run(sink, resume)


def run_ray(prepared: Prepared, sink: Sink, resume: Optional[Resume] = None, *,
            restarts: int = DEFAULT_RESTARTS, echo: Echo = _stderr) -> CycleRecord:
    """``--backend ray``: the coordinator as an actor (it loads the data itself), its records streamed back
    to ``sink`` here as each cycle ends. Completed cycles stay written if a later one fails."""
    started = init_ray(prepared.cfg)
    coord = None
    try:
        cfg = fit(prepared.cfg, echo)
        _warn_if_small(cfg, echo)
        coord = create_actor(Coordinator, coordinator_resources(cfg), cfg, prepared.run_id, restarts=restarts)
        last = None
        for ref in coord.stream.remote(resume):
            last = _get(ref)
            sink(last)
        if last is None:
            raise CoordinatorLostError("the coordinator finished without a single record")
        return last
    finally:
        if coord is not None:
            ray.kill(coord, no_restart=True)  # it owns the trainer actors: they stop with it
        if started:
            ray.shutdown()


def _get(ref: Any) -> CycleRecord:
    """One streamed record; a remote error is raised as itself (one line), not wrapped in Ray's traceback."""
    try:
        record = ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise
    except RayActorError as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CoordinatorLostError(f"the run's coordinator actor died ({why})") from None
    record.theta = {k: v if v.flags.writeable else v.copy() for k, v in record.theta.items()}  # store arrays are read-only
    return record


def _warn_if_small(cfg: RunConfig, echo: Echo) -> None:
    have = float(ray.cluster_resources().get("CPU", 0))
    need = cpus_needed(cfg)
    if have < need:
        echo(f"colt-ray: the Ray cluster has {have:g} CPUs and this run reserves {need:g}; "
             "its trainers wait until the cluster grows (lower --cpus-per-shard to share CPUs)")
