"""Entry points of the Ray backend.

* ``open_coordinator(cfg)``: the CLI's ``--backend ray`` and a sweep trial. Starts (or joins) Ray and creates
  the run's trainer actors at once, so their processes start while the driver loads the data;
  ``attach(prepared).run(sink)`` then drives the search with the coordinator in this process.
* ``run_on_ray(prepared, sink, resume=None, placement_group=None)``: both steps at once, for tests and
  callers that hold a prepared run (a placement group, when given, takes the actors).

Both give the same records, masks and metrics (timing aside) as ``run_local`` for the same config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import ray
from ray.util.placement_group import PlacementGroup

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import stderr_line
from colt_ray.core.tickets.methods import Resume, Sink
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.search import Prepared
from colt_ray.parallel.cluster import init_for
from colt_ray.parallel.coordinator import Coordinator
from colt_ray.parallel.resources import DEFAULT_RESTARTS, fit_to_cluster

Echo = Callable[[str], None]


def fit(cfg: RunConfig, echo: Echo = stderr_line) -> RunConfig:
    """``cfg`` adapted to the connected cluster: no GPU request without GPUs (said on stderr)."""
    return fit_to_cluster(cfg, float(ray.cluster_resources().get("GPU", 0)), echo)


def run_on_ray(
    prepared: Prepared,
    sink: Sink,
    resume: Optional[Resume] = None,
    *,
    placement_group: Optional[PlacementGroup] = None,
    restarts: int = DEFAULT_RESTARTS,
    echo: Echo = stderr_line,
) -> CycleRecord:
    """Run ``prepared`` with the coordinator in this process and its trainers as actors; returns the last
    cycle's record. ``sink`` gets every record as its cycle ends (write it, report it). ``resume``
    continues after a completed cycle. ``placement_group`` None: the current one (inside a Tune trial,
    the trial's), else none. Starts a local Ray if none is running. The actors are stopped at the end."""
    with open_coordinator(prepared.cfg, placement_group=placement_group, restarts=restarts, echo=echo) as coord:
        return coord.attach(prepared).run(sink, resume)


def open_coordinator(
    cfg: RunConfig,
    *,
    placement_group: Optional[PlacementGroup] = None,
    restarts: int = DEFAULT_RESTARTS,
    echo: Echo = stderr_line,
) -> Coordinator:
    """A run's coordinator with its trainer actors starting (before its data: ``attach`` them later), Ray
    started first if it is not; use it as a context manager so the actors stop at the end. Outside a
    placement group, a cluster too small for the shards is said on ``echo``."""
    init_for(cfg)
    fitted = fit(cfg, echo)
    if placement_group is None:
        _warn_if_small(fitted, echo)
    return Coordinator(fitted, restarts=restarts, placement_group=placement_group, echo=echo)


def _warn_if_small(cfg: RunConfig, echo: Echo) -> None:
    have = float(ray.cluster_resources().get("CPU", 0))
    need = cfg.num_shards * cfg.resources.cpus_per_shard  # the evaluator can share the shards' CPUs
    if have < need:
        echo(
            f"colt-ray: the Ray cluster has {have:g} CPUs and this run reserves {need:g}; "
            "its trainers wait until the cluster grows (lower --cpus-per-shard to share CPUs)"
        )
