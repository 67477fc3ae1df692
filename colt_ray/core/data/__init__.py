"""Datasets as in-memory tensors, batch preprocessing on the device, and sharding for COLT.

``load_dataset(cfg, seed)`` returns a :class:`DatasetBundle`; :class:`Preprocess` turns raw batches into model
input; ``make_shards``/``shard_bundle`` split a bundle for per-shard training. Importing this package registers
every dataset in :data:`DATASETS`: digits (embedded default), synthetic (tests), npz, mnist, fashion-mnist,
cifar10, cifar100, tinyimagenet. Nothing is downloaded unless ``DataConfig.download`` is set.
"""

from .bundle import AugmentSpec, DatasetBundle, TensorSplit, bundle_arrays, bundle_from_arrays
from .preprocess import Preprocess
from .shards import Shard, class_groups, make_shards, shard_bundle
from .spec import DATASETS, DatasetSpec, data_key, dataset_names, load_dataset

# dataset modules register themselves on import
from . import cifar, digits, mnist, npz, synthetic, tinyimagenet  # noqa: E402,F401  isort: skip

__all__ = [
    "AugmentSpec",
    "DATASETS",
    "DatasetBundle",
    "DatasetSpec",
    "Preprocess",
    "Shard",
    "TensorSplit",
    "bundle_arrays",
    "bundle_from_arrays",
    "class_groups",
    "data_key",
    "dataset_names",
    "load_dataset",
    "make_shards",
    "shard_bundle",
]
