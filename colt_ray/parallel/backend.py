"""Entry points of the Ray backend.

* ``RayRun(cfg)``: the CLI's ``--backend ray``. Starts (or joins) Ray and creates the run's trainer actors at
  once, so their processes start while the driver loads the data; ``run(prepared, sink)`` then drives the
  search with the coordinator in this process and writes each record as its cycle ends.
* ``run_on_ray(prepared, sink, resume=None, placement_group=None)``: the same for a Tune trial function (its
  actors go to the trial's placement group; the sink may also ``tune.report``) and for tests.

Both give the same records, masks and metrics (timing aside) as ``run_local`` for the same config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

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
    started first if it is not; use it as a context manager so the actors stop at the end."""
    init_for(cfg)
    return Coordinator(fit(cfg, echo), restarts=restarts, placement_group=placement_group, echo=echo)


class RayRun:
    """``--backend ray`` for one CLI run: Ray and the trainer actors start on entry (before the data load);
    on exit the actors stop, and so does Ray if this run started it (``started``: the caller started it)."""

    def __init__(
        self, cfg: RunConfig, *, restarts: int = DEFAULT_RESTARTS, echo: Echo = stderr_line, started: bool = False
    ):
        self.started = init_for(cfg) or started
        try:
            self.cfg = fit(cfg, echo)
            _warn_if_small(self.cfg, echo)
            self.coord = Coordinator(self.cfg, restarts=restarts, echo=echo)
        except BaseException:
            self._shutdown()
            raise

    def run(self, prepared: Prepared, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
        return self.coord.attach(prepared).run(sink, resume)

    def __enter__(self) -> RayRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.coord.close()
        self._shutdown()

    def _shutdown(self) -> None:
        if self.started:
            ray.shutdown()


def _warn_if_small(cfg: RunConfig, echo: Echo) -> None:
    have = float(ray.cluster_resources().get("CPU", 0))
    need = cfg.num_shards * cfg.resources.cpus_per_shard  # the evaluator can share the shards' CPUs
    if have < need:
        echo(
            f"colt-ray: the Ray cluster has {have:g} CPUs and this run reserves {need:g}; "
            "its trainers wait until the cluster grows (lower --cpus-per-shard to share CPUs)"
        )
