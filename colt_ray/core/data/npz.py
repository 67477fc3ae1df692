"""``npz``: any image classification data in one .npz file with x_train, y_train, x_test, y_test."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from colt_ray.core.errors import ConfigError

from .bundle import DatasetBundle, make_bundle
from .spec import ROOT_FIELD, DatasetSpec, missing, register, unreadable

KEYS = ("x_train", "y_train", "x_test", "y_test")


def to_nchw(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """(N,H,W) -> (N,1,H,W); (N,C,H,W) kept; (N,H,W,C) with C in {1,3} transposed; uint8 or float32 in [0,1]."""
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3):
            if x.shape[3] not in (1, 3):
                raise _bad(path, key, f"shape {x.shape} has no channel axis of size 1 or 3")
            x = x.transpose(0, 3, 1, 2)
    else:
        raise _bad(path, key, f"shape {x.shape} is not (N,H,W), (N,H,W,C) or (N,C,H,W)")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise _bad(path, key, "integer pixels must be in 0..255")
        return np.ascontiguousarray(x, dtype=np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise _bad(path, key, "float pixels must be in [0, 1]")
        return x
    raise _bad(path, key, f"dtype {x.dtype} is not uint8 or float")


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise _bad(path, key, f"shape {y.shape} does not match {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        raise _bad(path, key, f"labels must be integers, got {y.dtype}")
    if len(y) and y.min() < 0:
        raise _bad(path, key, "labels must be >= 0")
    return y.astype(np.int64)


def _bad(path: Path, key: str, why: str) -> ConfigError:
    return ConfigError(ROOT_FIELD, f"{path} '{key}': {why}")


def load_npz(root: Optional[Path], download: bool = False) -> DatasetBundle:
    """Load the .npz file ``root`` (allow_pickle=False); num_classes = largest label + 1, no augmentation."""
    assert root is not None
    path = root
    if not path.is_file():
        raise missing(path, "expected an .npz file") if not path.exists() else unreadable(path, "not a file")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise unreadable(path, e) from e
    if not hasattr(f, "files"):
        raise unreadable(path, "a single array, not an .npz archive")
    with f:
        for key in KEYS:
            if key not in f.files:
                raise ConfigError(ROOT_FIELD, f"{path} has no '{key}' array; needs {', '.join(KEYS)}")
        try:
            arrays = {key: f[key] for key in KEYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise unreadable(path, e) from e
    x_train = to_nchw(arrays["x_train"], path, "x_train")
    x_test = to_nchw(arrays["x_test"], path, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise _bad(path, "x_test", f"image shape {x_test.shape[1:]} differs from x_train's {x_train.shape[1:]}")
    if x_train.dtype != x_test.dtype:  # one uint8, one float: bring both to float [0, 1]
        x_train, x_test = (a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a for a in (x_train, x_test))
    y_train = _labels(arrays["y_train"], len(x_train), path, "y_train")
    y_test = _labels(arrays["y_test"], len(x_test), path, "y_test")
    return make_bundle("npz", x_train, y_train, x_test, y_test)


register(
    DatasetSpec(
        "npz",
        load_npz,
        "one .npz file with x_train, y_train, x_test, y_test",
        needs_root=True,
        root_help="FILE.npz holding x_train, y_train, x_test, y_test",
    )
)
