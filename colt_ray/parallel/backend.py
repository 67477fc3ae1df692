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
from ray.util.placement_group import PlacementGroup, get_current_placement_group, remove_placement_group
from ray.util.placement_group import placement_group as new_placement_group

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import ConfigError, stderr_line
from colt_ray.core.tickets.methods import Resume, Sink
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.search import Prepared
from colt_ray.parallel.cluster import init_for
from colt_ray.parallel.coordinator import Coordinator
from colt_ray.parallel.gpus import settle_gpus
from colt_ray.parallel.resources import DEFAULT_RESTARTS, fit_to_cluster, has_evaluator, placement_bundles, total

Echo = Callable[[str], None]


def fit(cfg: RunConfig, echo: Echo = stderr_line) -> RunConfig:
    """``cfg`` as its trainers get it on the connected cluster: GPU shares kept, or, on a cluster without GPUs,
    dropped for the CPU (said on stderr), waited for from the autoscaler, or refused (``gpus.settle_gpus``)."""
    res = cfg.resources
    keep = settle_gpus(placement_bundles(cfg)[1:], res.allow_cpu_fallback, res.start_timeout, echo)
    return fit_to_cluster(cfg, keep)


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
    name: Optional[str] = None,
) -> Coordinator:
    """A run's coordinator with its trainer actors starting (before its data: ``attach`` them later), Ray
    started first if it is not; use it as a context manager so the actors stop at the end. Outside a
    placement group (a Tune trial's), the actors get one of their own (``gang``): they start together within
    ``start_timeout`` seconds, or the run ends with a ConfigError naming what the cluster lacks.
    ``name``: the run id the actors are named after (default: the config's)."""
    init_for(cfg)
    own_group = placement_group is None and get_current_placement_group() is None
    # a sweep trial's config was fitted by the sweep's driver, which sized the trial's group from it
    fitted = fit(cfg, echo) if own_group else fit_to_cluster(cfg, keep_gpus=True)
    owned, first = None, 1  # a sweep trial's group: bundle 0 is the trial's own
    if own_group:
        placement_group = owned = gang(fitted, echo)  # all trainers at once, or a clear error: never a hang
        first = 0
    try:
        coordinator = Coordinator(
            fitted, restarts=restarts, placement_group=placement_group, echo=echo, name=name, first_bundle=first
        )
    except BaseException:
        if owned is not None:
            remove_placement_group(owned)
        raise
    coordinator.owned_group = owned
    return coordinator


def gang(cfg: RunConfig, echo: Echo = stderr_line) -> PlacementGroup:
    """A placement group for the run's trainer actors (one bundle each; the driver is outside it), ready within
    ``start_timeout`` seconds, else a ConfigError naming what the cluster lacks. An evaluator that would not
    fit beside the k shards is left out of it and shares their CPUs (it runs beside them only)."""
    bundles = placement_bundles(cfg)[1:]
    if has_evaluator(cfg) and cfg.num_shards and not fits(bundles):
        bundles = bundles[:-1]
        echo(
            f"colt-ray: the Ray cluster has no CPU left for the ticket evaluator beside {cfg.num_shards} shards; "
            "it shares their CPUs"
        )
    pg = new_placement_group(bundles, strategy="PACK")
    timeout = cfg.resources.start_timeout
    if not pg.wait(timeout_seconds=min(2.0, timeout)):
        echo(f"colt-ray: waiting up to {timeout:g} s for the Ray cluster to place {len(bundles)} trainer actors")
        if not pg.wait(timeout_seconds=max(0.0, timeout - 2.0)):
            remove_placement_group(pg)
            raise ConfigError("cpus-per-shard", f"the Ray cluster could not place this run within {timeout:g} s: "
                              f"{what_does_not_fit(bundles)}")  # fmt: skip
    return pg


def fits(bundles: list[dict[str, float]]) -> bool:
    """Whether the cluster's totals could hold ``bundles`` at all (ignoring how they split over nodes)."""
    have = ray.cluster_resources()
    return all(total(bundles, r) <= have.get(r, 0.0) + 1e-9 for r in ("CPU", "GPU"))


def what_does_not_fit(bundles: list[dict[str, float]]) -> str:
    """``needs 3 CPU in 2 bundles (largest 1.5); the cluster has 2 CPU, largest node 2 (lower ...)``"""
    need = {r: total(bundles, r) for r in ("CPU", "GPU")}
    have = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    parts = []
    for r in ("CPU", "GPU"):
        if need[r] <= 0:
            continue
        largest = max((b.get(r, 0.0) for b in bundles), default=0.0)
        node = max((n.get(r, 0.0) for n in nodes), default=0.0)
        parts.append(
            f"needs {need[r]:g} {r} in {len(bundles)} bundles (largest {largest:g}); the cluster has "
            f"{have.get(r, 0.0):g} {r}, largest node {node:g}"
        )
    return "; ".join(parts) + " (lower --cpus-per-shard / --gpus-per-shard or --shards, or add nodes)"
