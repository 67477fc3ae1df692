"""``tinyimagenet``: the standard ``tiny-imagenet-200`` folder (JPEGs decoded with PIL, cached as .npz).

Train images are ``train/<wnid>/images/*.JPEG``; the labelled ``val`` split is used as the test split. Classes
follow ``wnids.txt``. The decoded arrays are cached in ``tiny-imagenet-200/colt_ray_cache.npz`` (written
atomically, when the folder is writable) together with a fingerprint of the file list, so a changed folder is
decoded again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from colt_ray.core.errors import ConfigError

from .bundle import AugmentSpec, DatasetBundle, channel_stats, make_bundle
from .spec import ROOT_FIELD, DatasetSpec, missing, register, unreadable

FOLDER = "tiny-imagenet-200"
CACHE_NAME = "colt_ray_cache.npz"
CACHE_VERSION = 1
SIZE = 64
EXTENSIONS = (".jpeg", ".jpg")
TINY_AUGMENT = AugmentSpec(crop_padding=4, hflip=True)

Listing = list[tuple[Path, int]]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise missing(path, f"expected the standard {FOLDER} layout")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise unreadable(path, e) from e


def list_files(base: Path) -> tuple[list[str], Listing, Listing]:
    """(wnids, train files, val files) of ``base`` = ``.../tiny-imagenet-200``; files as (path, label), sorted."""
    wnids = [w for w in _read_text(base / "wnids.txt").split() if w]
    if not wnids:
        raise unreadable(base / "wnids.txt", "no class ids")
    label_of = {w: i for i, w in enumerate(wnids)}
    train: Listing = []
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise missing(folder, f"expected a folder per wnids.txt entry under {base / 'train'}")
        names = sorted(e.name for e in os.scandir(folder) if e.name.lower().endswith(EXTENSIONS))
        train.extend((folder / n, label) for n in names)
    annotations = base / "val" / "val_annotations.txt"
    val: Listing = []
    for lineno, line in enumerate(_read_text(annotations).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[1] not in label_of:
            why = "expected 'file<TAB>wnid<TAB>bbox' with a wnid listed in wnids.txt"
            raise ConfigError(ROOT_FIELD, f"{annotations} line {lineno}: {why}")
        val.append((base / "val" / "images" / fields[0], label_of[fields[1]]))
    val.sort(key=lambda item: item[0].name)
    return wnids, train, val


def fingerprint(base: Path, wnids: list[str], train: Listing, val: Listing) -> str:
    """A hash of the class list and every image's relative path, label and size (missing files are errors)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}\n{' '.join(wnids)}\n".encode())
    for path, label in [*train, *val]:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise missing(path) from None
        h.update(f"{path.relative_to(base).as_posix()}\t{label}\t{size}\n".encode())
    return h.hexdigest()


def decode(path: Path) -> np.ndarray:
    """One image as (3, 64, 64) uint8 RGB (greyscale images converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise unreadable(path, e) from e
    if rgb.size != (SIZE, SIZE):
        raise unreadable(path, f"size {rgb.size[0]}x{rgb.size[1]}, expected {SIZE}x{SIZE}")
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_all(files: Listing) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, 64, 64) uint8, y (N,) int64) for ``files``, decoded by a few threads (PIL releases the GIL)."""
    x = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, arr in enumerate(pool.map(decode, [p for p, _ in files])):
            x[i] = arr
    return x, np.array([label for _, label in files], dtype=np.int64)


def _read_cache(cache: Path, fp: str) -> Optional[dict[str, np.ndarray]]:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as f:
            if str(f["fingerprint"]) != fp:
                return None
            return {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test", "mean", "std")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``cache`` atomically (temp file + rename); a read-only folder only costs a warning."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".colt_ray_cache.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
        tmp = None
    except OSError as e:
        warnings.warn(f"could not cache decoded Tiny ImageNet at {cache}: {e}", stacklevel=3)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def load_tinyimagenet(root: Optional[Path], download: bool = False) -> DatasetBundle:
    """Tiny ImageNet 3x64x64 from ``<root>/tiny-imagenet-200`` (test = the labelled val split), 200 classes."""
    assert root is not None
    base = root / FOLDER
    if not base.is_dir():
        raise missing(base, f"expected the standard {FOLDER} folder under {root}")
    wnids, train, val = list_files(base)
    fp = fingerprint(base, wnids, train, val)
    cache = base / CACHE_NAME
    arrays = _read_cache(cache, fp)
    if arrays is None:
        x_train, y_train = decode_all(train)
        x_test, y_test = decode_all(val)
        mean, std = channel_stats(torch.from_numpy(x_train))
        arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        arrays.update(mean=np.array(mean), std=np.array(std))
        _write_cache(cache, {**arrays, "fingerprint": np.array(fp)})
    return make_bundle(
        "tinyimagenet",
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        num_classes=len(wnids),
        mean=arrays["mean"].tolist(),
        std=arrays["std"].tolist(),
        augment=TINY_AUGMENT,
        class_names=wnids,
    )


register(
    DatasetSpec(
        "tinyimagenet",
        load_tinyimagenet,
        "Tiny ImageNet (200 classes, 64x64), the tiny-imagenet-200 folder",
        needs_root=True,
        root_help=f"DIR containing {FOLDER}/",
    )
)
