"""The resource request of one sweep trial, computed from the shard count k it sampled.

On the Ray backend a trial reserves 2 + k bundles (``colt_ray.parallel.resources.placement_bundles``):
bundle 0 holds the trial function and its in-process coordinator, bundles 1..k the shard trainer actors, the
last one the ticket evaluator (none with ``eval_tickets: none``). So a trial starts only when all of its
actors fit, and never waits for its own actors. On the local backend the
trial trains every shard itself and reserves one bundle.
"""

from __future__ import annotations

from typing import Any

from colt_ray.core.config import RunConfig
from colt_ray.parallel.resources import fit_to_cluster, placement_bundles


def trial_bundles(config: dict[str, Any], keep_gpus: bool = True) -> list[dict[str, float]]:
    """The placement-group bundles of a trial with flat ``config`` (its GPU shares dropped unless ``keep_gpus``:
    the sweep's GPU policy decided so, and said it, in ``driver.check_cluster``)."""
    cfg = fit_to_cluster(RunConfig.from_flat(config), keep_gpus)
    if cfg.backend == "ray":
        return placement_bundles(cfg)
    res = cfg.resources
    head = {"CPU": res.cpus_per_shard}
    if res.gpus_per_shard > 0:
        head["GPU"] = res.gpus_per_shard
    return [head]


class TrialResources:
    """``config -> PlacementGroupFactory`` for ``tune.with_resources`` (a picklable callable)."""

    def __init__(self, keep_gpus: bool = True):
        self.keep_gpus = bool(keep_gpus)

    def __call__(self, config: dict[str, Any]) -> Any:
        from ray.tune import PlacementGroupFactory

        return PlacementGroupFactory(trial_bundles(config, self.keep_gpus), strategy="PACK")
