"""The dataset registry and ``load_dataset``: root checks, optional download, validation hold-out."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from colt_ray.core.config import DataConfig
from colt_ray.core.errors import ConfigError
from colt_ray.core.registry import Registry
from colt_ray.core.seeds import derive_seed

from .bundle import AugmentSpec, DatasetBundle, stratified_holdout

ROOT_FIELD = "data-root"


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset. ``load(root, download)`` returns a bundle without a val split.

    ``root`` is None exactly when ``needs_root`` is False. ``root_help`` completes the sentence
    "dataset NAME needs --data-root ..." shown when a root is required but missing.
    """

    name: str
    load: Callable[[Optional[Path], bool], DatasetBundle]
    summary: str
    needs_root: bool = False
    root_help: str = ""
    can_download: bool = False


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under its name."""
    DATASETS.add(spec.name, spec)
    return spec


def dataset_names() -> list[str]:
    """The registered dataset names, sorted."""
    return DATASETS.names()


def one_line(text: object) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(str(text).split())


def missing(path: Path, hint: str = "") -> ConfigError:
    """The error for an expected file or folder that is not there (naming its full path)."""
    return ConfigError(ROOT_FIELD, f"missing {path}" + (f"; {hint}" if hint else ""))


def unreadable(path: Path, why: object) -> ConfigError:
    """The error for a file that exists but cannot be read or is corrupt."""
    return ConfigError(ROOT_FIELD, f"cannot read {path}: {one_line(why)}")


def torchvision_download(class_name: str, root: Path) -> None:
    """Fetch a torchvision dataset (``torchvision.datasets.<class_name>``) into ``root``; errors are ConfigErrors."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:  # pragma: no cover - torchvision is a dependency
        raise ConfigError("download", f"downloading needs torchvision ({one_line(e)})") from e
    try:
        getattr(tvd, class_name)(str(root), train=True, download=True)
    except Exception as e:  # network, disk, checksum ... all become one user-facing line
        raise ConfigError("download", f"could not download {class_name} into {root}: {one_line(e)}") from e


def resolve_root(spec: DatasetSpec, data_root: Optional[str], download: bool) -> Optional[Path]:
    """The checked root path for ``spec`` (None for datasets that need none)."""
    if download and not spec.can_download and spec.needs_root:
        raise ConfigError("download", f"dataset {spec.name} cannot be downloaded; place it under --data-root")
    if not spec.needs_root:
        return None
    if not data_root:
        raise ConfigError(ROOT_FIELD, f"dataset {spec.name} needs --data-root {spec.root_help}")
    root = Path(data_root).expanduser()
    if not download and not root.exists():
        raise ConfigError(ROOT_FIELD, f"{root} does not exist")
    return root


def with_val_split(bundle: DatasetBundle, val_fraction: float, seed: int) -> DatasetBundle:
    """Hold out a stratified ``val_fraction`` of the training set (seeded by ``derive_seed(seed, "val")``).

    mean/std stay those of the full training set, so they do not depend on the seed.
    """
    if not val_fraction:
        return dataclasses.replace(bundle, val=None)
    keep, held = stratified_holdout(bundle.train.y, val_fraction, derive_seed(seed, "val"))
    return dataclasses.replace(bundle, train=bundle.train.subset(keep), val=bundle.train.subset(held))


def data_key(cfg: DataConfig, seed: int) -> tuple:
    """Everything ``load_dataset(cfg, seed)`` depends on: the data settings (not ``download``, which only says
    how the files arrive) and the seed only when a validation split is held out (it draws the split). Runs of
    equal keys load equal bundles, so a sweep loads one per key and its trials share it."""
    seeded = int(seed) if cfg.val_fraction else None
    return (cfg.dataset, cfg.data_root, float(cfg.val_fraction), bool(cfg.augment), seeded)


def load_dataset(cfg: DataConfig, seed: int) -> DatasetBundle:
    """Load ``cfg.dataset`` and apply ``cfg.val_fraction`` and ``cfg.augment``.

    Raises ConfigError (one line) for an unknown name, a missing/wrong root, missing or corrupt files, or a
    ``val_fraction`` outside [0, 1).
    """
    spec = DATASETS.get(cfg.dataset)
    f = cfg.val_fraction
    if not isinstance(f, (int, float)) or math.isnan(f) or not 0.0 <= f < 1.0:
        raise ConfigError("val-fraction", f"must be in [0, 1), got {f!r}")
    root = resolve_root(spec, cfg.data_root, cfg.download)
    bundle = spec.load(root, bool(cfg.download))
    bundle = with_val_split(bundle, float(f), seed)
    if not cfg.augment:
        bundle = dataclasses.replace(bundle, augment=AugmentSpec())
    return bundle
