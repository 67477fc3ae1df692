"""``mnist`` and ``fashion-mnist`` from torchvision's raw IDX files (plain or .gz), parsed with numpy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from colt_ray.core.errors import ConfigError

from .bundle import DatasetBundle, make_bundle
from .spec import ROOT_FIELD, DatasetSpec, register, torchvision_download, unreadable

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in IDX file ``path`` (gzip if it ends in .gz); checks the magic number and the size."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise unreadable(path, e) from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise unreadable(path, f"only {len(data)} bytes, shorter than an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise unreadable(path, f"magic number {found}, expected {magic}; not an IDX file of this kind")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise unreadable(path, f"{len(data)} bytes, expected {expected} for shape {dims} (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def find_file(raw: Path, name: str) -> Path:
    """``raw/name`` or else ``raw/name.gz``; a ConfigError naming the plain path when neither exists."""
    for candidate in (raw / name, raw / (name + ".gz")):
        if candidate.is_file():
            return candidate
    raise ConfigError(ROOT_FIELD, f"missing {raw / name} (or .gz); expected torchvision's raw layout")


def read_raw(raw: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (x, y), "test": (x, y)}`` with x (N, 1, 28, 28) uint8 and y (N,) int64 from folder ``raw``."""
    out = {}
    for split, (images_name, labels_name) in FILES.items():
        images_path, labels_path = find_file(raw, images_name), find_file(raw, labels_name)
        x = read_idx(images_path, IMAGES_MAGIC)
        y = read_idx(labels_path, LABELS_MAGIC)
        if len(x) != len(y):
            raise unreadable(labels_path, f"{len(y)} labels for {len(x)} images in {images_path}")
        if len(y) and y.max() > 9:
            raise unreadable(labels_path, f"label {int(y.max())} is not a digit 0-9")
        out[split] = (x[:, None, :, :], y.astype(np.int64))
    return out


def _loader(name: str, folder: str, tv_class: str, class_names):
    def load(root: Optional[Path], download: bool = False) -> DatasetBundle:
        assert root is not None
        if download:
            torchvision_download(tv_class, root)
        parts = read_raw(root / folder / "raw")
        (x_train, y_train), (x_test, y_test) = parts["train"], parts["test"]
        return make_bundle(name, x_train, y_train, x_test, y_test, num_classes=10, class_names=class_names)

    load.__doc__ = f"{name}: 28x28 grey uint8 images from <root>/{folder}/raw (torchvision layout); no augmentation."
    return load


load_mnist = _loader("mnist", "MNIST", "MNIST", tuple(str(d) for d in range(10)))
load_fashion_mnist = _loader("fashion-mnist", "FashionMNIST", "FashionMNIST", FASHION_CLASSES)

for _name, _folder, _load in (("mnist", "MNIST", load_mnist), ("fashion-mnist", "FashionMNIST", load_fashion_mnist)):
    register(
        DatasetSpec(
            _name,
            _load,
            f"{_name} from torchvision's {_folder}/raw IDX files",
            needs_root=True,
            root_help=f"DIR containing {_folder}/raw/",
            can_download=True,
        )
    )
