"""What each actor of a run asks Ray for, computed from ``ResourcesConfig`` in one place.

Every trainer actor (a COLT shard, COLT's evaluator, IMP's or a jackpot's full-data trainer) reserves
``cpus_per_shard`` CPUs and ``gpus_per_shard`` of a GPU. The coordinator runs in the driver (or the Tune
trial) and only waits on its actors. A sweep reserves ``placement_bundles(cfg)`` per trial: bundle 0 for the
trial (which holds the coordinator), then one bundle per shard, then the evaluator's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

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


@dataclass(frozen=True)
class NodeType:
    """A node type the cluster's autoscaler may add (``cluster.declared_node_types``): its name, the resources
    of one node, and how many such nodes there may be (None: no limit declared)."""

    name: str
    resources: dict[str, float]
    max_count: Optional[int] = None

    def can_add(self) -> bool:
        return self.max_count is None or self.max_count > 0


def holds(node: dict[str, float], bundle: dict[str, float]) -> bool:
    """Whether one node with resources ``node`` can hold ``bundle`` (every resource it asks for)."""
    return all(node.get(r, 0.0) + 1e-9 >= v for r, v in bundle.items())


def total(bundles: list[dict[str, float]], resource: str) -> float:
    """How much of ``resource`` (CPU, GPU) ``bundles`` ask for together."""
    return sum(b.get(resource, 0.0) for b in bundles)


def uses_shards(cfg: RunConfig) -> bool:
    """COLT trains k shard models; every other method (IMP, jackpot) trains only the full-data model."""
    return cfg.method.uses_shards


def has_evaluator(cfg: RunConfig) -> bool:
    """True when the run has an evaluator actor beside its shards (COLT with any ticket evaluated)."""
    return uses_shards(cfg) and cfg.ticket.eval_tickets != "none"


def shard_groups(cfg: RunConfig) -> list[tuple[int, ...]]:
    """The shards each shard actor trains: one each, or ``shards_per_actor`` of them stacked (the last group
    may be smaller)."""
    m = cfg.resources.shards_per_actor
    return [tuple(range(i, min(i + m, cfg.ticket.shards))) for i in range(0, cfg.ticket.shards, m)]


def num_trainers(cfg: RunConfig) -> int:
    """Trainer actors of a run: the shard actors (+ the evaluator) for COLT, one full-data trainer otherwise."""
    return len(shard_groups(cfg)) + int(has_evaluator(cfg)) if uses_shards(cfg) else 1


def shard_resources(cfg: RunConfig, restarts: int = DEFAULT_RESTARTS, shards: int = 1) -> ActorResources:
    """One trainer actor holding ``shards`` shard models (1: a shard, the evaluator or a full-data trainer):
    that many CPU/GPU shares; restarted and its task retried up to ``restarts`` times."""
    res = cfg.resources
    return ActorResources(shards * res.cpus_per_shard, shards * res.gpus_per_shard, restarts, restarts)


def trainer_shares(cfg: RunConfig) -> list[int]:
    """Shares each trainer actor reserves, in bundle order: the shard actors (``shards_per_actor`` each),
    then the evaluator; one full-data trainer for IMP and jackpots."""
    if not uses_shards(cfg):
        return [1]
    m = cfg.resources.shards_per_actor
    return [m] * len(shard_groups(cfg)) + [1] * int(has_evaluator(cfg))


def placement_bundles(cfg: RunConfig) -> list[dict[str, float]]:
    """Bundles of one run's placement group: [trial/coordinator] + one per trainer actor (shards, then the
    evaluator) for a Tune ``PlacementGroupFactory``. The coordinator only waits on its actors, so its
    bundle is token-sized. Call after ``fit_to_cluster`` so no GPU is asked of a CPU-only cluster."""
    res = cfg.resources
    bundles: list[dict[str, float]] = [{"CPU": 0.01}]  # Ray refuses all-zero bundles
    for n in trainer_shares(cfg):
        bundles.append(
            {"CPU": n * res.cpus_per_shard, **({"GPU": n * res.gpus_per_shard} if res.gpus_per_shard else {})}
        )
    return bundles


def cpus_needed(cfg: RunConfig) -> float:
    """CPUs a run reserves at once outside a placement group (its trainer actors)."""
    return sum(trainer_shares(cfg)) * cfg.resources.cpus_per_shard


def local_num_cpus(cfg: RunConfig, machine_cpus: int) -> int:
    """CPUs to start a local Ray with: the machine's count, or enough for every trainer if that is more."""
    return max(machine_cpus, math.ceil(cpus_needed(cfg)))


def fit_to_cluster(cfg: RunConfig, keep_gpus: bool) -> RunConfig:
    """``cfg`` as its trainer actors get it: the GPU share dropped unless ``keep_gpus`` (decided, and said on
    stderr, by the GPU policy: ``colt_ray.parallel.gpus.settle_gpus``), and a trainer without a GPU share on
    the CPU even where its node has GPUs.

    Progress bars stay as the driver decided (``cli.bars_where_watched``: on only where its stderr is a
    terminal): each actor's bar is drawn in the driver's terminal by Ray's ``tqdm_ray``, which stacks the k
    bars in their own rows (``actors.RayBar``); the driver prints one line per cycle either way.
    """
    res = cfg.resources
    if res.gpus_per_shard > 0 and not keep_gpus:
        res = dataclasses.replace(res, gpus_per_shard=0.0, device="cpu")
    if res.gpus_per_shard <= 0 and res.device == "auto":
        # Ray leaves CUDA_VISIBLE_DEVICES alone for a worker that reserved no GPU: "auto" would put every such
        # actor on cuda:0 of its node, unaccounted for. A trainer without a GPU share never touches CUDA.
        res = dataclasses.replace(res, device="cpu")
    return cfg.replace(resources=res)
