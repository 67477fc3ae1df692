"""What each actor of a run asks Ray for, computed from ``ResourcesConfig`` in one place.

The shard trainers reserve ``cpus_per_shard`` CPUs and ``gpus_per_shard`` of a GPU each. The coordinator
reserves nothing when it runs as an actor: it only trains (the ticket evaluation) while every shard trainer
is idle, so its work never overlaps theirs (``run_colt`` evaluates, then trains the shards). A sweep reserves
``placement_bundles(cfg)`` per trial: bundle 0 for the trial (which holds the coordinator), then one bundle
per trainer.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from colt_ray.core.config import RunConfig

DEFAULT_RESTARTS = 3  # a trainer actor may die this many times in a run before the run fails


@dataclass(frozen=True)
class ActorResources:
    """The resource request and fault-tolerance options of one actor (``ray.remote(...).options(**...)``)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_restarts: int = 0
    max_task_retries: int = 0

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def uses_shards(cfg: RunConfig) -> bool:
    """COLT trains k shard models; every other method (IMP, jackpot) trains only the full-data model."""
    return cfg.ticket.method == "colt"


def num_trainers(cfg: RunConfig) -> int:
    """Trainer actors of a run: k shards for COLT, the one full-data trainer otherwise."""
    return cfg.ticket.shards if uses_shards(cfg) else 1


def coordinator_trains(cfg: RunConfig) -> bool:
    """True when the coordinator itself trains (COLT's ticket evaluation on the full data)."""
    return uses_shards(cfg) and cfg.ticket.eval_tickets


def shard_resources(cfg: RunConfig, restarts: int = DEFAULT_RESTARTS) -> ActorResources:
    """One trainer actor: its CPU/GPU share; restarted and its task retried up to ``restarts`` times."""
    res = cfg.resources
    return ActorResources(res.cpus_per_shard, res.gpus_per_shard, restarts, restarts)


def coordinator_resources(cfg: RunConfig) -> ActorResources:
    """The coordinator actor of ``--backend ray``: no reservation (see the module docstring), a GPU share
    only when it evaluates tickets and GPUs are in use. Never restarted: the driver holds the records."""
    gpus = cfg.resources.gpus_per_shard if coordinator_trains(cfg) else 0.0
    return ActorResources(0.0, gpus, 0, 0)


def placement_bundles(cfg: RunConfig) -> list[dict[str, float]]:
    """Bundles of one run's placement group: [trial/coordinator] + one per trainer (for a Tune
    ``PlacementGroupFactory``). Call after ``fit_to_cluster`` so no GPU is asked of a CPU-only cluster."""
    res = cfg.resources
    head = {"CPU": res.cpus_per_shard} if coordinator_trains(cfg) else {"CPU": 0.01}  # Ray refuses all-zero bundles
    if coordinator_trains(cfg) and res.gpus_per_shard > 0:
        head["GPU"] = res.gpus_per_shard
    shard = {"CPU": res.cpus_per_shard}
    if res.gpus_per_shard > 0:
        shard["GPU"] = res.gpus_per_shard
    return [head] + [dict(shard) for _ in range(num_trainers(cfg))]


def cpus_needed(cfg: RunConfig) -> float:
    """CPUs a run reserves at once outside a placement group (the shard trainers)."""
    return num_trainers(cfg) * cfg.resources.cpus_per_shard


def local_num_cpus(cfg: RunConfig, machine_cpus: int) -> int:
    """CPUs to start a local Ray with: the machine's count, or enough for every trainer if that is more."""
    return max(machine_cpus, math.ceil(cpus_needed(cfg)))


def fit_to_cluster(cfg: RunConfig, cluster_gpus: float, echo: Optional[Callable[[str], None]] = None) -> RunConfig:
    """Drop a GPU request the cluster cannot serve (train on the CPU instead of waiting forever), say so.

    Actors never see the progress bars (``progress=False``): k interleaved bars would be unreadable; the
    driver prints one line per cycle instead.
    """
    res = cfg.resources
    echo = echo or _stderr
    if res.gpus_per_shard > 0 and cluster_gpus <= 0:
        echo(f"colt-ray: no GPU in the Ray cluster; ignoring --gpus-per-shard {res.gpus_per_shard:g}, training on the CPU")
        res = dataclasses.replace(res, gpus_per_shard=0.0, device="cpu")
    return cfg.replace(resources=dataclasses.replace(res, progress=False))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
