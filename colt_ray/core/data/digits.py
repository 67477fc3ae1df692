"""``digits``: scikit-learn's bundled 8x8 handwritten digits, the embedded default (no files, no root)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from colt_ray.core.errors import ConfigError

from .bundle import DatasetBundle, make_bundle, stratified_holdout
from .spec import DatasetSpec, register

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed: the train/test split never depends on the run seed


def load_digits_bundle(root: Optional[Path] = None, download: bool = False) -> DatasetBundle:
    """1797 images (1, 8, 8) as float32 in [0, 1] (values / 16), 10 classes, fixed stratified 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise ConfigError("dataset", "dataset digits needs scikit-learn (pip install scikit-learn)") from e
    raw = load_digits()
    x = (np.asarray(raw.images, dtype=np.float32) / 16.0)[:, None, :, :]
    y = np.asarray(raw.target, dtype=np.int64)
    train, test = stratified_holdout(y, TEST_FRACTION, SPLIT_SEED)
    return make_bundle(
        "digits", x[train], y[train], x[test], y[test], num_classes=10, class_names=[str(d) for d in range(10)]
    )


register(DatasetSpec("digits", load_digits_bundle, "scikit-learn's 8x8 digits (embedded, 1797 images)"))
