"""Up-front checks of a whole search space: every setting's extremes, validated before Ray starts.

A sampled trial must never be the first to discover that, say, 20 shards cannot split 10 classes. So each
searched setting is tried at both ends of its range (every choice for a categorical) with the others at
their first value, plus the worst case for a class split (most shards, ``split: class``, ``method: colt``
when the space allows them), each through ``RunConfig.from_flat`` and ``validate(cfg, num_classes)``; a
``compare:`` sweep checks every corner once per compared method.
The dataset's class count is found without loading images.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

from colt_ray.core.config import DataConfig, RunConfig, validate
from colt_ray.core.errors import ConfigError
from colt_ray.parallel.resources import NodeType, holds, total
from colt_ray.parallel.sweep.bundles import trial_bundles
from colt_ray.parallel.sweep.compare import method_settings
from colt_ray.parallel.sweep.spec import SweepSpec

# datasets whose class count is fixed by their definition (no need to look at the files)
KNOWN_CLASSES = {
    "digits": 10,
    "synthetic": 10,
    "mnist": 10,
    "fashion-mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "tinyimagenet": 200,
}


def dataset_classes(dataset: str, data_root: Optional[str]) -> int:
    """The number of classes of ``dataset``: from its definition, from an npz file's labels only, or (for a
    dataset registered later) by loading it. Raises ConfigError for an unknown name or unreadable file."""
    from colt_ray.core.data import DATASETS, load_dataset

    DATASETS.get(dataset)  # unknown name -> ConfigError listing the valid ones
    if dataset == "npz":
        return _npz_classes(data_root)
    if dataset in KNOWN_CLASSES:
        return KNOWN_CLASSES[dataset]
    return load_dataset(DataConfig(dataset=dataset, data_root=data_root), 0).num_classes


def _npz_classes(data_root: Optional[str]) -> int:
    if not data_root:
        raise ConfigError(
            "data-root", "dataset npz needs data_root: an .npz file with x_train, y_train, x_test, y_test"
        )
    try:
        with np.load(data_root, allow_pickle=False) as f:
            labels = [f[k] for k in ("y_train", "y_test") if k in f.files]
    except FileNotFoundError:
        raise ConfigError("data-root", f"missing {data_root}; expected an .npz file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError("data-root", f"cannot read {data_root}: {' '.join(str(e).split())}") from e
    if not labels or not all(y.size for y in labels):
        raise ConfigError("data-root", f"{data_root} has no y_train/y_test labels")
    return int(max(int(y.max()) for y in labels)) + 1


def corner_configs(spec: SweepSpec) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(label, flat config)`` for every configuration the checks try (see the module docstring); in a
    ``compare:`` sweep, every corner once per method, with that method's settings."""
    if not spec.compare:
        yield from _corners(spec)
        return
    for method in spec.compare:
        over = method_settings(spec, method)
        for label, flat in _corners(spec):
            yield f"method={method}, {label}", {**flat, **over}


def _corners(spec: SweepSpec) -> Iterator[tuple[str, dict[str, Any]]]:
    base = spec.base_config()
    firsts = {k: d.corners()[0] for k, d in spec.search.items()}
    yield "first values", {**base, **firsts}
    for key, dist in spec.search.items():
        for value in dist.corners()[1:]:
            yield f"{key}={value}", {**base, **firsts, key: value}
    worst = {**base, **firsts}
    forced = []
    if "shards" in spec.search:
        worst["shards"] = max(spec.search["shards"].corners())
        forced.append(f"shards={worst['shards']}")
    for key, want in (("split", "class"), ("method", "colt")):
        if key in spec.search and want in spec.search[key].corners():
            worst[key] = want
            forced.append(f"{key}={want}")
    if forced:
        yield "worst case " + ", ".join(forced), worst


def check_spec(spec: SweepSpec) -> None:
    """Validate every corner configuration of ``spec``; raise ConfigError naming the corner that fails."""
    if "allow_cpu_fallback" in spec.search:  # the driver decides once, for every trial
        raise ConfigError(
            "allow_cpu_fallback", "is one choice for the whole sweep: set it under fixed: or with --allow-cpu-fallback"
        )
    classes: dict[tuple, int] = {}
    for label, flat in corner_configs(spec):
        try:
            cfg = RunConfig.from_flat(flat)
            key = (cfg.data.dataset, cfg.data.data_root)
            if key not in classes:
                classes[key] = dataset_classes(*key)
            validate(cfg, num_classes=classes[key])
            trial_bundles(flat, keep_gpus=True)  # resource settings a trial could not be scheduled with
        except ConfigError as e:
            message = str(e)[len(e.field) + 2 :]
            raise ConfigError(e.field, f"{message} (search-space corner: {label})") from None
        except (TypeError, ValueError) as e:  # a value of the wrong type reaching a comparison
            raise ConfigError("space", f"{' '.join(str(e).split())} (search-space corner: {label})") from None


def largest_trial(spec: SweepSpec, keep_gpus: bool = True, by: str = "CPU") -> tuple[str, list[dict[str, float]]]:
    """``(corner label, bundles)`` of the trial of ``spec`` that reserves the most of ``by`` (CPU or GPU; ties:
    the other), with its GPU shares kept or not."""
    other = "GPU" if by == "CPU" else "CPU"
    worst: Optional[tuple[tuple[float, float], str, list[dict[str, float]]]] = None
    for label, flat in corner_configs(spec):
        bundles = trial_bundles(flat, keep_gpus)
        need = (total(bundles, by), total(bundles, other))
        if worst is None or need > worst[0]:
            worst = (need, label, bundles)
    assert worst is not None  # a spec has at least its first corner
    return worst[1], worst[2]


def check_fits_cluster(
    spec: SweepSpec,
    resources: dict[str, float],
    nodes: list[dict[str, float]],
    types: Optional[list[NodeType]] = None,
    keep_gpus: bool = True,
) -> None:
    """ConfigError naming what does not fit when the largest trial of ``spec`` (over its corners, GPU shares
    kept or not) could never be placed on the connected cluster (``resources``: its totals; ``nodes``: each
    live node's), instead of Tune waiting for it forever: every bundle must fit on some node, and all of a
    trial's bundles together in the cluster. On an autoscaling cluster (``types``: the node types its
    autoscaler declares, ``cluster.declared_node_types``), a node of a declared type counts too: a bundle may
    fit one, and the totals count every node the types may still add (up to their max count, if declared).
    The largest trial is the one with the most CPUs, then the one with the most GPUs."""
    for by in ("CPU", "GPU"):
        _check_fits(*largest_trial(spec, keep_gpus, by), resources, nodes, types)


def _check_fits(
    label: str,
    bundles: list[dict[str, float]],
    resources: dict[str, float],
    nodes: list[dict[str, float]],
    types: Optional[list[NodeType]],
) -> None:
    addable = [t for t in types or [] if t.can_add()]
    shapes = [*nodes, *(t.resources for t in addable)]
    need = {r: total(bundles, r) for r in ("CPU", "GPU")}
    have = {r: float(resources.get(r, 0.0)) for r in ("CPU", "GPU")}
    more = {r: sum(_most_added(t, r) for t in addable) for r in ("CPU", "GPU")}
    largest = {r: max((n.get(r, 0.0) for n in nodes), default=0.0) for r in ("CPU", "GPU")}
    homeless = next((b for b in sorted(bundles, key=_size, reverse=True) if not any(holds(s, b) for s in shapes)), None)
    if any(need[r] > have[r] + more[r] + 1e-9 for r in need):
        why = (
            f"needs {need['CPU']:g} CPU, {need['GPU']:g} GPU in {len(bundles)} bundles; the cluster has "
            f"{have['CPU']:g} CPU, {have['GPU']:g} GPU"
        )
        if addable:
            why += (
                f" and its autoscaler's node types add at most {_amount(more['CPU'])} CPU, {_amount(more['GPU'])} GPU"
            )
    elif homeless is not None:
        why = f"has a bundle of {homeless} and the largest node has {largest['CPU']:g} CPU, {largest['GPU']:g} GPU"
        if addable:
            why += f", no node type ({', '.join(t.name for t in addable)}) either"
    else:
        return
    raise ConfigError(
        "cluster",
        f"the largest trial ({label}) {why}: it would wait forever; lower cpus_per_shard / gpus_per_shard "
        "or the shard count, or add nodes",
    )


def _amount(x: float) -> str:
    return "any" if math.isinf(x) else f"{x:g}"


def _size(bundle: dict[str, float]) -> tuple[float, float]:
    return bundle.get("CPU", 0.0), bundle.get("GPU", 0.0)


def _most_added(node_type: NodeType, resource: str) -> float:
    """How much of ``resource`` the nodes of ``node_type`` may add (no max count declared: no limit)."""
    per_node = node_type.resources.get(resource, 0.0)
    if per_node <= 0:
        return 0.0
    return math.inf if node_type.max_count is None else node_type.max_count * per_node
