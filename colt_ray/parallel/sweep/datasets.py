"""A sweep's datasets in the object store, once per sweep: one per distinct dataset its trials load.

Every trial used to load its dataset and put it in the object store itself. The driver now loads each dataset
it can tell the trials will load (``shared_configs``: all of them when no data setting is searched), puts its
arrays once (``put_datasets``), and the trials receive the references through ``tune.with_parameters``; a
trial finds its own by ``data_key`` (``trial_bundle``) and, failing that (searched data settings), loads its
data itself as before. The arrays are the ones ``load_dataset`` returns, so every result is the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

from colt_ray.core.config import DataConfig, RunConfig
from colt_ray.core.errors import ConfigError, stderr_line
from colt_ray.parallel.sweep.compare import trial_variants
from colt_ray.parallel.sweep.spec import SweepSpec

DATA_SETTINGS = frozenset(f.name for f in dataclasses.fields(DataConfig))  # dataset, data_root, val_fraction ...
Shared = dict[tuple, Any]  # data_key -> reference to bundle_arrays(the bundle)


def shared_configs(spec: SweepSpec) -> list[RunConfig]:
    """One trial config per distinct dataset the trials of ``spec`` load, when the driver can tell them in
    advance: no data setting is searched, nor the seed where a validation split draws from it. Otherwise
    ``[]``: each trial loads its own data."""
    from colt_ray.core.data import data_key

    if DATA_SETTINGS & set(spec.search):
        return []
    out: dict[tuple, RunConfig] = {}
    for variant in trial_variants(spec):  # compared methods and seeds: the trials of one recipe
        cfg = RunConfig.from_flat({**spec.base_config(), **variant})
        if cfg.data.val_fraction and "seed" in spec.search:
            return []
        out.setdefault(data_key(cfg.data, cfg.ticket.seed), cfg)
    return list(out.values())


def load_and_put(cfg: RunConfig) -> Any:
    """Load the dataset of ``cfg`` as a trial would and put its arrays in the object store; the reference."""
    import ray

    from colt_ray.core.data import bundle_arrays, load_dataset

    return ray.put(bundle_arrays(load_dataset(cfg.data, cfg.ticket.seed)))


def put_datasets(spec: SweepSpec, echo: Callable[[str], None] = stderr_line) -> Shared:
    """The sweep's shared datasets, each put once: ``{data_key: reference}``. A dataset the driver cannot load
    (a data root only the worker nodes have) is left to the trials, said in one line."""
    from colt_ray.core.data import data_key

    shared: Shared = {}
    for cfg in shared_configs(spec):
        try:
            shared[data_key(cfg.data, cfg.ticket.seed)] = load_and_put(cfg)
        except ConfigError as e:
            echo(f"colt-ray: the sweep's driver could not load {cfg.data.dataset} ({e}); each trial loads its own")
    return shared


def trial_bundle(cfg: RunConfig, shared: Optional[Shared]) -> tuple[Any, Any]:
    """The trial's dataset from the sweep's shared ones: ``(bundle, reference)``, its arrays mapped from the
    object store (no copy on the node); ``(None, None)`` when the sweep holds none for it."""
    from colt_ray.core.data import bundle_from_arrays, data_key

    ref = (shared or {}).get(data_key(cfg.data, cfg.ticket.seed))
    if ref is None:
        return None, None
    import ray

    return bundle_from_arrays(ray.get(ref)), ref
