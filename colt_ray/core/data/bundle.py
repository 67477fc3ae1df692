"""The in-memory form of a dataset: tensor splits, the standard augmentation and the bundle that holds them."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


def as_index(idx) -> torch.Tensor:
    """Any index list, numpy array or tensor (int or bool) as an int64 CPU tensor of positions."""
    t = torch.as_tensor(np.array(idx) if not isinstance(idx, torch.Tensor) else idx)  # a copy: idx may be read-only
    if t.dtype == torch.bool:
        return t.nonzero().flatten()
    return t.to(torch.int64).flatten()


@dataclass(frozen=True, eq=False)
class TensorSplit:
    """One split of a dataset: images ``x`` (N, C, H, W), uint8 0..255 or float32 in [0, 1], labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"TensorSplit.x must be (N, C, H, W), got shape {tuple(self.x.shape)}")
        if self.x.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"TensorSplit.x must be uint8 or float32, got {self.x.dtype}")
        if self.y.ndim != 1 or self.y.dtype != torch.int64:
            raise ValueError(f"TensorSplit.y must be 1-D int64, got {self.y.dtype} {tuple(self.y.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"TensorSplit has {len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx) -> TensorSplit:
        """The samples at ``idx`` (positions or a boolean mask; list, numpy array or tensor), in that order."""
        i = as_index(idx)
        return TensorSplit(self.x[i], self.y[i])


@dataclass(frozen=True)
class AugmentSpec:
    """Random training augmentation, applied batched by :class:`Preprocess`."""

    crop_padding: int = 0  # random crop of the original size after zero padding by this many pixels
    hflip: bool = False  # horizontal flip with probability 1/2
    rotation: float = 0.0  # rotation by a uniform angle in [-rotation, rotation] degrees

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.rotation < 0:
            raise ValueError(f"crop_padding and rotation must be >= 0, got {self}")

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        return self.crop_padding > 0 or self.hflip or self.rotation > 0


@dataclass(frozen=True, eq=False)
class DatasetBundle:
    """A loaded dataset: splits, shape, class count, normalisation statistics and standard augmentation."""

    name: str
    num_classes: int
    in_shape: tuple[int, int, int]  # (C, H, W)
    train: TensorSplit
    test: TensorSplit
    val: Optional[TensorSplit]
    mean: tuple[float, ...]  # per channel, of [0,1]-scaled training data
    std: tuple[float, ...]
    augment: AugmentSpec  # the dataset's standard augmentation (AugmentSpec() if none)
    class_names: Optional[tuple[str, ...]] = None
    # a shard's bundle: the size of the training set it was cut from (``shard_bundle``; COLT's ``shard_steps:
    # match`` trains a shard as many steps as a training over it); None for a whole dataset
    full_train_size: Optional[int] = None

    def __post_init__(self) -> None:
        c = self.in_shape[0]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"{self.name}: mean/std need {c} channel values")
        for part in (self.train, self.test, self.val):
            if part is not None and tuple(part.x.shape[1:]) != tuple(self.in_shape):
                raise ValueError(f"{self.name}: split shape {tuple(part.x.shape[1:])} != in_shape {self.in_shape}")


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``x`` scaled to [0, 1], in chunks; a zero std becomes 1.0."""
    c = x.shape[1]
    chunk = max(1, (1 << 23) // max(1, x[0].numel() if len(x) else 1))  # ~64 MB of float64 at a time
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for part in x.split(chunk):
        p = part.to(torch.float64)
        if x.dtype == torch.uint8:
            p = p / 255.0
        total += p.sum(dim=(0, 2, 3))
        total_sq += (p * p).sum(dim=(0, 2, 3))
        count += p.shape[0] * p.shape[2] * p.shape[3]
    if count == 0:
        return (0.0,) * c, (1.0,) * c
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    std = [math.sqrt(v) for v in var.tolist()]
    return tuple(mean.tolist()), tuple(s if s > 1e-12 else 1.0 for s in std)


def stratified_holdout(y, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..len(y)-1`` into (kept, held out), per class ``round(n_c * fraction)`` held out.

    Each class keeps at least one sample. The shuffle uses a CPU torch generator seeded with ``seed`` (one
    ``randperm`` per class in label order), so the split is identical on every machine. Both index arrays are
    sorted int64.
    """
    labels = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y, dtype=np.int64)
    g = torch.Generator()
    g.manual_seed(int(seed))
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        n_held = min(int(math.floor(len(where) * fraction + 0.5)), len(where) - 1)
        perm = torch.randperm(len(where), generator=g).numpy()
        held.append(where[perm[:n_held]])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask).astype(np.int64), held_idx.astype(np.int64)


def make_bundle(
    name: str,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    num_classes: Optional[int] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    augment: AugmentSpec = AugmentSpec(),
    class_names: Optional[Sequence[str]] = None,
) -> DatasetBundle:
    """A bundle (no val split) from numpy arrays or tensors; mean/std computed from the training data if not given."""

    def tensor(a, dtype=None) -> torch.Tensor:
        t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
        return t.to(dtype) if dtype is not None else t

    train = TensorSplit(tensor(x_train), tensor(y_train, torch.int64))
    test = TensorSplit(tensor(x_test), tensor(y_test, torch.int64))
    if num_classes is None:
        top = max(int(train.y.max()) if len(train) else -1, int(test.y.max()) if len(test) else -1)
        num_classes = top + 1
    if mean is None or std is None:
        mean, std = channel_stats(train.x)
    return DatasetBundle(
        name=name,
        num_classes=int(num_classes),
        in_shape=tuple(int(s) for s in train.x.shape[1:]),  # type: ignore[arg-type]
        train=train,
        test=test,
        val=None,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        augment=augment,
        class_names=tuple(class_names) if class_names is not None else None,
    )


def bundle_arrays(bundle: DatasetBundle) -> dict:
    """``bundle`` as numpy arrays and plain values: what a parallel backend puts in shared memory once, so
    that every trainer maps the same arrays instead of loading the data itself. Each split keeps its image
    strides: a loader may leave a size-1 channel dimension with an unusual stride, and convolution kernels
    choose their memory format (and so their rounding) from the strides."""
    out: dict = {f.name: getattr(bundle, f.name) for f in dataclasses.fields(bundle)}
    for split in ("train", "test", "val"):
        part = getattr(bundle, split)
        out[split] = None if part is None else (part.x.numpy(), part.y.numpy(), tuple(part.x.stride()))
    return out


def bundle_from_arrays(arrays: dict) -> DatasetBundle:
    """The bundle of ``bundle_arrays``; its tensors share the arrays' memory (read-only object-store memory
    is fine: training never writes the data) and have the original strides, so trainings are bit-identical."""

    def split(triple):
        if triple is None:
            return None
        x, y, strides = triple
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "not writable": the data are only read
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return TensorSplit(xt.as_strided(xt.shape, strides), yt)

    return DatasetBundle(
        **{**arrays, "train": split(arrays["train"]), "test": split(arrays["test"]), "val": split(arrays["val"])}
    )
