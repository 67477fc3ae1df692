"""``cifar10`` and ``cifar100`` from torchvision's "python version" pickles (32x32 RGB, crop + flip augmentation)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from .bundle import AugmentSpec, DatasetBundle, make_bundle
from .spec import DatasetSpec, missing, register, torchvision_download, unreadable

CIFAR_AUGMENT = AugmentSpec(crop_padding=4, hflip=True)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _get(d: dict, key: str):
    """``d[key]`` for pickles written with bytes keys (the real files) or str keys."""
    if key.encode() in d:
        return d[key.encode()]
    return d[key]


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch: x (N, 3, 32, 32) uint8 (rows are R plane, G plane, B plane), y (N,) int64."""
    if not path.is_file():
        raise missing(path, "expected torchvision's CIFAR python layout")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(_get(d, "data"), dtype=np.uint8)
        labels = np.asarray(_get(d, label_key), dtype=np.int64)
    except Exception as e:  # unpickling garbage can raise nearly anything
        raise unreadable(path, f"{type(e).__name__}: {e}") from e
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise unreadable(path, f"data {data.shape} / labels {labels.shape}; expected (N, 3072) / (N,)")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise unreadable(path, f"labels must be in 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _label_names(path: Path, key: str) -> Optional[tuple[str, ...]]:
    """Class names from a ``batches.meta``/``meta`` pickle, or None if absent or unreadable."""
    try:
        with open(path, "rb") as f:
            names = _get(pickle.load(f, encoding="bytes"), key)
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception:
        return None


def load_cifar10(root: Optional[Path], download: bool = False) -> DatasetBundle:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/data_batch_1..5`` and ``test_batch``."""
    assert root is not None
    if download:
        torchvision_download("CIFAR10", root)
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        raise missing(folder, "expected torchvision's CIFAR-10 python layout")
    train = [read_batch(folder / f"data_batch_{i}", "labels", 10) for i in range(1, 6)]
    x_test, y_test = read_batch(folder / "test_batch", "labels", 10)
    names = _label_names(folder / "batches.meta", "label_names") or CIFAR10_CLASSES
    return make_bundle(
        "cifar10",
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment=CIFAR_AUGMENT,
        class_names=names if len(names) == 10 else None,
    )


def load_cifar100(root: Optional[Path], download: bool = False) -> DatasetBundle:
    """CIFAR-100 (fine labels) from ``<root>/cifar-100-python/train`` and ``test``."""
    assert root is not None
    if download:
        torchvision_download("CIFAR100", root)
    folder = root / "cifar-100-python"
    if not folder.is_dir():
        raise missing(folder, "expected torchvision's CIFAR-100 python layout")
    x_train, y_train = read_batch(folder / "train", "fine_labels", 100)
    x_test, y_test = read_batch(folder / "test", "fine_labels", 100)
    names = _label_names(folder / "meta", "fine_label_names")
    return make_bundle(
        "cifar100",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=100,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        augment=CIFAR_AUGMENT,
        class_names=names if names is not None and len(names) == 100 else None,
    )


register(
    DatasetSpec(
        "cifar10",
        load_cifar10,
        "CIFAR-10, torchvision's python layout",
        needs_root=True,
        root_help="DIR containing cifar-10-batches-py/",
        can_download=True,
    )
)
register(
    DatasetSpec(
        "cifar100",
        load_cifar100,
        "CIFAR-100 (fine labels), torchvision's python layout",
        needs_root=True,
        root_help="DIR containing cifar-100-python/",
        can_download=True,
    )
)
