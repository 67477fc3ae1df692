"""Splitting a dataset into k shards: disjoint class groups (COLT's class split) or stratified IID parts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from colt_ray.core.errors import ConfigError
from colt_ray.core.seeds import generator

from .bundle import DatasetBundle, TensorSplit

SPLITS = ("class", "random")  # the shard splits (config: TicketConfig.split)


@dataclass(frozen=True, eq=False)
class Shard:
    """One shard: index arrays into the bundle's splits and the classes it holds."""

    index: int
    classes: tuple[int, ...]  # original labels present; under a class split, new label = position in this tuple
    relabel: bool  # True for a class split
    train_idx: np.ndarray  # int64 positions in bundle.train, sorted
    test_idx: np.ndarray  # in bundle.test
    val_idx: Optional[np.ndarray]  # in bundle.val (None when the bundle has no val split)

    def __repr__(self) -> str:
        val = "None" if self.val_idx is None else len(self.val_idx)
        return (
            f"Shard(index={self.index}, classes={self.classes}, relabel={self.relabel}, "
            f"train={len(self.train_idx)}, test={len(self.test_idx)}, val={val})"
        )


def class_groups(num_classes: int, k: int) -> list[tuple[int, ...]]:
    """``k`` contiguous disjoint groups covering ``0..num_classes-1``; leftovers go one each to the first groups.

    (10, 2) -> (0..4), (5..9); (10, 3) -> (0, 1, 2, 3), (4, 5, 6), (7, 8, 9). ConfigError unless 1 <= k <= C.
    """
    if not 1 <= k <= num_classes:
        why = f"cannot split {num_classes} classes into {k} class groups; need 1..{num_classes}"
        raise ConfigError("shards", why)
    base, extra = divmod(num_classes, k)
    groups, start = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        groups.append(tuple(range(start, start + size)))
        start += size
    return groups


def _labels(split: Optional[TensorSplit]) -> Optional[np.ndarray]:
    return None if split is None else split.y.numpy()


def _by_class(y: np.ndarray, groups: list[tuple[int, ...]]) -> list[np.ndarray]:
    return [np.flatnonzero(np.isin(y, np.asarray(g, dtype=np.int64))).astype(np.int64) for g in groups]


def _deal(y: np.ndarray, k: int, seed: int, part: str) -> list[np.ndarray]:
    """Per class (in label order) shuffle with ``generator(seed, "shards", part, c)`` and deal round-robin.

    Dealing continues across classes where the previous class stopped, so shard sizes differ by at most 1 both
    per class and in total.
    """
    out: list[list[np.ndarray]] = [[] for _ in range(k)]
    start = 0
    for c in np.unique(y):
        where = np.flatnonzero(y == c)
        perm = where[torch.randperm(len(where), generator=generator(seed, "shards", part, int(c))).numpy()]
        for j in range(k):
            out[(start + j) % k].append(perm[j::k])
        start = (start + len(where)) % k
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in out]


def overlap_share(overlap: float, k: int) -> float:
    """The share q of every other shard's examples a shard adds to its own part, so that it holds the fraction
    ``overlap`` of the set: q = (f - 1/k) / (1 - 1/k), 0 at or below 1/k (disjoint shards), 1 at f = 1."""
    if k <= 1 or overlap <= 1.0 / k:
        return 0.0
    return min(1.0, (overlap - 1.0 / k) / (1.0 - 1.0 / k))


def _widen(parts: list[np.ndarray], y: np.ndarray, q: float, seed: int, part: str) -> list[np.ndarray]:
    """Each disjoint part plus, per class c, ``round(q * m_c)`` of the ``m_c`` examples of class c that the
    other parts hold, drawn with ``generator(seed, "overlap", part, i, c)`` for shard i: each shard its own
    draw, deterministic in the seed."""
    out = []
    for i, own in enumerate(parts):
        others = np.setdiff1d(np.arange(len(y), dtype=np.int64), own, assume_unique=True)
        extra = [own]
        for c in np.unique(y[others]):
            where = others[y[others] == c]
            take = int(np.floor(q * len(where) + 0.5))
            perm = torch.randperm(len(where), generator=generator(seed, "overlap", part, i, int(c))).numpy()
            extra.append(where[perm[:take]])
        out.append(np.sort(np.concatenate(extra)).astype(np.int64))
    return out


def make_shards(bundle: DatasetBundle, k: int, kind: str, seed: int, overlap: float = 0.0) -> list[Shard]:
    """Split ``bundle`` into ``k`` shards of kind "class" (class partition, relabelled) or "random" (stratified IID).

    The test (and val) sets are split the same way so each shard has its own evaluation data. Deterministic in
    ``seed`` (which only the random split uses). ``overlap`` f > 1/k (``shard_overlap``): each shard holds its
    disjoint part plus the share :func:`overlap_share` of each other part's examples, per class (about f of
    the set); a class shard then holds examples of every class and keeps the original labels (its head has
    every class, its own classes over-represented).
    """
    shards = _disjoint_shards(bundle, k, kind, seed)
    q = overlap_share(overlap, k)
    if q == 0.0:
        return shards
    y_train, y_test, y_val = _labels(bundle.train), _labels(bundle.test), _labels(bundle.val)
    train = _widen([s.train_idx for s in shards], y_train, q, seed, "train")
    test = _widen([s.test_idx for s in shards], y_test, q, seed, "test")
    val = _widen([s.val_idx for s in shards], y_val, q, seed, "val") if y_val is not None else None
    every = tuple(range(bundle.num_classes)) if kind == "class" else shards[0].classes
    return [Shard(i, every, False, train[i], test[i], val[i] if val is not None else None) for i in range(k)]


def _disjoint_shards(bundle: DatasetBundle, k: int, kind: str, seed: int) -> list[Shard]:
    """The paper's shards: a disjoint class partition or a stratified deal (see :func:`make_shards`)."""
    if kind not in SPLITS:
        raise ConfigError("split", f"unknown {kind!r}; valid: {', '.join(SPLITS)}")
    y_train, y_test, y_val = _labels(bundle.train), _labels(bundle.test), _labels(bundle.val)
    if kind == "class":
        groups = class_groups(bundle.num_classes, k)
        train, test = _by_class(y_train, groups), _by_class(y_test, groups)
        val = _by_class(y_val, groups) if y_val is not None else None
        return [Shard(i, groups[i], True, train[i], test[i], val[i] if val is not None else None) for i in range(k)]
    if k < 1:
        raise ConfigError("shards", f"need at least 1 shard, got {k}")
    classes, counts = np.unique(y_train, return_counts=True)
    if len(counts) and counts.min() < k:
        c = int(classes[counts.argmin()])
        why = f"class {c} has only {counts.min()} training samples; cannot give one to each of {k} shards"
        raise ConfigError("shards", why)
    train, test = _deal(y_train, k, seed, "train"), _deal(y_test, k, seed, "test")
    val = _deal(y_val, k, seed, "val") if y_val is not None else None
    present = tuple(int(c) for c in classes)
    return [Shard(i, present, False, train[i], test[i], val[i] if val is not None else None) for i in range(k)]


def shard_bundle(bundle: DatasetBundle, shard: Shard) -> DatasetBundle:
    """The shard as its own bundle; under a class split labels become 0..len(classes)-1 and num_classes shrinks."""
    train, test = bundle.train.subset(shard.train_idx), bundle.test.subset(shard.test_idx)
    val = None
    if bundle.val is not None and shard.val_idx is not None:
        val = bundle.val.subset(shard.val_idx)
    whole = bundle.full_train_size if bundle.full_train_size is not None else len(bundle.train)
    if not shard.relabel:
        return dataclasses.replace(bundle, train=train, test=test, val=val, full_train_size=whole)
    mapping = torch.full((bundle.num_classes,), -1, dtype=torch.int64)
    mapping[torch.as_tensor(shard.classes, dtype=torch.int64)] = torch.arange(len(shard.classes))

    def remap(split: Optional[TensorSplit]) -> Optional[TensorSplit]:
        return None if split is None else TensorSplit(split.x, mapping[split.y])

    names = bundle.class_names
    return dataclasses.replace(
        bundle,
        num_classes=len(shard.classes),
        train=remap(train),
        test=remap(test),
        val=remap(val),
        class_names=tuple(names[c] for c in shard.classes) if names is not None else None,
        full_train_size=whole,
    )
