"""GPU shares exactly as requested: what a run (or a sweep) that asks for GPU shares does on a cluster with none.

A GPU share is never dropped silently. When the connected Ray cluster has no GPU at all:

* CPU fallback allowed (``allow_cpu_fallback``; by default yes on a local Ray this process started, no on a
  cluster it joined): one line says so, and why, and the run trains on the CPU;
* else, when the cluster's autoscaler declares a node type that holds the largest GPU bundle
  (``cluster.declared_node_types``): one line says it waits for that type, the autoscaler is asked for the
  bundles (``ray.autoscaler.sdk.request_resources``) and the run waits up to ``start_timeout`` seconds for the
  GPUs (a line every ``PROGRESS_SECONDS``), then keeps its shares, or stops with a one-line ConfigError;
* else a one-line ConfigError at once (exit status 2; nothing is written before this check).

A cluster with some GPU keeps the shares; whether they can be placed is the placement group's business
(``backend.gang``, the sweep's fit check).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import ray

from colt_ray.core.errors import ConfigError, stderr_line
from colt_ray.parallel import cluster
from colt_ray.parallel.resources import NodeType, holds, total

Echo = Callable[[str], None]
Bundles = list[dict[str, float]]
PROGRESS_SECONDS = 15.0  # a line this often while waiting for the autoscaler
POLL_SECONDS = 0.5
FALLBACK_HINT = "pass --allow-cpu-fallback to train on the CPU"


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def fallback_choice(setting: Optional[bool]) -> tuple[bool, str]:
    """Whether a GPU share may fall back to the CPU on the connected cluster, and why (said in the line)."""
    if setting is not None:
        return setting, "--allow-cpu-fallback" if setting else "--no-allow-cpu-fallback"
    if cluster.joined_cluster():
        return False, "the default on a cluster this command joined"
    return True, "the default on a local Ray"


def largest_gpu_bundle(bundles: Bundles) -> dict[str, float]:
    return max(bundles, key=lambda b: (b.get("GPU", 0.0), b.get("CPU", 0.0)))


def gpu_node_type(bundles: Bundles, types: Optional[list[NodeType]]) -> Optional[NodeType]:
    """The first declared node type that may still be added and holds the largest GPU bundle, else None."""
    big = largest_gpu_bundle(bundles)
    return next((t for t in types or [] if t.can_add() and holds(t.resources, big)), None)


@dataclass(frozen=True)
class GpuPlan:
    """What the policy decided: keep the GPU shares (after the autoscaler adds ``wait_for``, when given) or
    train on the CPU; ``line``: what to say about it (None: nothing to say, the cluster has GPUs)."""

    keep: bool
    wait_for: Optional[NodeType] = None
    line: Optional[str] = None


def plan_gpus(bundles: Bundles, allow: Optional[bool]) -> GpuPlan:
    """The policy for trainers that reserve ``bundles`` (their GPU shares as asked) on the connected cluster
    (see the module docstring), waiting for nothing yet; ConfigError (field gpus-per-shard) when the cluster has
    no GPU, no node type that adds one, and no CPU fallback."""
    if total(bundles, "GPU") <= 0 or cluster_gpus() > 0:
        return GpuPlan(True)
    allowed, why = fallback_choice(allow)
    share = largest_gpu_bundle(bundles)["GPU"]
    if allowed:
        return GpuPlan(
            False,
            line=f"colt-ray: no GPU in the Ray cluster: training on the CPU instead of {share:g}-GPU shares ({why})",
        )
    node_type = gpu_node_type(bundles, cluster.declared_node_types())
    if node_type is None:
        raise ConfigError(
            "gpus-per-shard",
            f"the Ray cluster has no GPU and declares no autoscaler node type that adds one for a {share:g}-GPU "
            f"share, and CPU fallback is off ({why}); {FALLBACK_HINT}",
        )
    return GpuPlan(True, node_type)


def carry_out(plan: GpuPlan, bundles: Bundles, timeout: float, echo: Echo = stderr_line) -> bool:
    """Say ``plan``'s line and wait for its node type (``wait_for_gpus``); whether the GPU shares are kept."""
    if plan.line:
        echo(plan.line)
    if plan.wait_for is not None:
        wait_for_gpus(bundles, plan.wait_for, timeout, echo)
    return plan.keep


def settle_gpus(bundles: Bundles, allow: Optional[bool], timeout: float, echo: Echo = stderr_line) -> bool:
    """``plan_gpus`` then ``carry_out``: whether trainers that reserve ``bundles`` keep their GPU shares."""
    return carry_out(plan_gpus(bundles, allow), bundles, timeout, echo)


def wait_for_gpus(bundles: Bundles, node_type: NodeType, timeout: float, echo: Echo = stderr_line) -> None:
    """Ask the autoscaler for ``bundles`` and wait until the cluster has their GPUs, up to ``timeout`` seconds
    (ConfigError after that). The request is withdrawn either way: it would otherwise hold the nodes for as
    long as the cluster lives, while the run's own placement groups keep asking for what they use."""
    from ray.autoscaler.sdk import request_resources

    need = total(bundles, "GPU")
    echo(
        f"colt-ray: no GPU in the Ray cluster: waiting up to {timeout:g} s for the autoscaler to add node type "
        f"{node_type.name} ({len(bundles)} bundles, {need:g} GPU; --allow-cpu-fallback trains on the CPU instead)"
    )
    request_resources(bundles=bundles)  # one request per cluster: it replaces any earlier one
    start = said = time.monotonic()
    try:
        while (have := cluster_gpus()) < need - 1e-9:
            now = time.monotonic()
            if now - start >= timeout:
                raise ConfigError(
                    "gpus-per-shard",
                    f"no GPU came up within {timeout:g} s: waited for the autoscaler to add node type "
                    f"{node_type.name} for {need:g} GPU in {len(bundles)} bundles; check the autoscaler, raise "
                    f"--start-timeout, or {FALLBACK_HINT}",
                )
            if now - said >= PROGRESS_SECONDS:
                echo(f"colt-ray: still waiting for the autoscaler: {have:g} of {need:g} GPU after {now - start:.0f} s")
                said = now
            time.sleep(POLL_SECONDS)
    finally:
        request_resources(bundles=[])
