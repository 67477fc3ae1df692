"""Up-front checks of a whole search space: every setting's extremes, validated before Ray starts.

A sampled trial must never be the first to discover that, say, 20 shards cannot split 10 classes. So each
searched setting is tried at both ends of its range (every choice for a categorical) with the others at
their first value, plus the worst case for a class split (most shards, ``split: class``, ``method: colt``
when the space allows them), each through ``RunConfig.from_flat`` and ``validate(cfg, num_classes)``; a
``compare:`` sweep checks every corner once per compared method.
The dataset's class count is found without loading images.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

from colt_ray.core.config import DataConfig, RunConfig, validate
from colt_ray.core.errors import ConfigError
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
    classes: dict[tuple, int] = {}
    for label, flat in corner_configs(spec):
        try:
            cfg = RunConfig.from_flat(flat)
            key = (cfg.data.dataset, cfg.data.data_root)
            if key not in classes:
                classes[key] = dataset_classes(*key)
            validate(cfg, num_classes=classes[key])
            trial_bundles(flat, cluster_gpus=1.0)  # resource settings a trial could not be scheduled with
        except ConfigError as e:
            message = str(e)[len(e.field) + 2 :]
            raise ConfigError(e.field, f"{message} (search-space corner: {label})") from None
        except (TypeError, ValueError) as e:  # a value of the wrong type reaching a comparison
            raise ConfigError("space", f"{' '.join(str(e).split())} (search-space corner: {label})") from None


def check_fits_cluster(spec: SweepSpec, resources: dict[str, float], nodes: list[dict[str, float]]) -> None:
    """ConfigError naming what does not fit when the largest trial of ``spec`` (over its corners) could never
    be placed on the connected cluster (``resources``: its totals; ``nodes``: each live node's), instead of
    Tune waiting for it forever: every bundle must fit on some node, and all of a trial's bundles together
    in the cluster. A cluster that autoscales may grow later; this checks the cluster as it is."""
    gpus = float(resources.get("GPU", 0.0))
    worst, worst_label = None, ""
    for label, flat in corner_configs(spec):
        bundles = trial_bundles(flat, cluster_gpus=gpus)
        need = (sum(b.get("CPU", 0.0) for b in bundles), sum(b.get("GPU", 0.0) for b in bundles))
        if worst is None or need > worst[0]:
            worst, worst_label = (need, bundles), label
    if worst is None:
        return
    (cpu, gpu), bundles = worst
    have_cpu = float(resources.get("CPU", 0.0))
    node_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    node_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    big = max(bundles, key=lambda b: (b.get("CPU", 0.0), b.get("GPU", 0.0)))
    if cpu > have_cpu + 1e-9 or gpu > gpus + 1e-9:
        why = (
            f"needs {cpu:g} CPU, {gpu:g} GPU in {len(bundles)} bundles; the cluster has {have_cpu:g} CPU, {gpus:g} GPU"
        )
    elif big.get("CPU", 0.0) > node_cpu + 1e-9 or big.get("GPU", 0.0) > node_gpu + 1e-9:
        why = f"has a bundle of {big} and the largest node has {node_cpu:g} CPU, {node_gpu:g} GPU"
    else:
        return
    raise ConfigError(
        "cluster",
        f"the largest trial ({worst_label}) {why}: it would wait forever; lower cpus_per_shard / gpus_per_shard "
        "or the shard count, or add nodes",
    )
