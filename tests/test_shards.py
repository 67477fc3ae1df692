"""Shards: class groups by hand, class partition with relabelling, stratified random split, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colt_ray.core.data import AugmentSpec, DatasetBundle, TensorSplit, class_groups, make_shards, shard_bundle
from colt_ray.core.errors import ConfigError


def split(labels: list[int]) -> TensorSplit:
    """Images whose single pixel is the sample's position, so subsets can be traced back."""
    n = len(labels)
    return TensorSplit(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.tensor(labels, dtype=torch.int64))


def bundle(train_per_class=7, test_per_class=3, val_per_class=None, num_classes=10) -> DatasetBundle:
    classes = list(range(num_classes))
    return DatasetBundle(
        name="toy",
        num_classes=num_classes,
        in_shape=(1, 1, 1),
        train=split(classes * train_per_class),
        test=split(classes * test_per_class),
        val=split(classes * val_per_class) if val_per_class else None,
        mean=(0.5,),
        std=(0.25,),
        augment=AugmentSpec(hflip=True),
        class_names=tuple(f"c{i}" for i in classes),
    )


def test_class_groups_by_hand():
    assert class_groups(10, 2) == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]
    assert class_groups(10, 3) == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert class_groups(4, 4) == [(0,), (1,), (2,), (3,)]
    assert class_groups(7, 1) == [tuple(range(7))]
    with pytest.raises(ConfigError, match="^shards: cannot split 3 classes into 5"):
        class_groups(3, 5)
    with pytest.raises(ConfigError, match="^shards: "):
        class_groups(3, 0)


def test_class_split_partitions_and_relabels():
    b = bundle(val_per_class=2)
    shards = make_shards(b, 3, "class", seed=0)
    assert [s.classes for s in shards] == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)] and all(s.relabel for s in shards)
    for part, n in (("train_idx", 70), ("test_idx", 30), ("val_idx", 20)):
        idx = np.concatenate([getattr(s, part) for s in shards])
        assert sorted(idx.tolist()) == list(range(n))  # disjoint and covering
        assert all(getattr(s, part).dtype == np.int64 for s in shards)
    sub = shard_bundle(b, shards[1])
    assert sub.num_classes == 3 and sub.class_names == ("c4", "c5", "c6")
    assert len(sub.train) == 21 and len(sub.test) == 9 and len(sub.val) == 6
    for part, orig in ((sub.train, b.train), (sub.test, b.test), (sub.val, b.val)):
        assert set(part.y.tolist()) == {0, 1, 2}
        positions = part.x.flatten().long()  # the pixel is the original position
        assert torch.equal(orig.y[positions] - 4, part.y)
    assert (sub.mean, sub.std, sub.augment, sub.in_shape) == (b.mean, b.std, b.augment, b.in_shape)
    assert b.train.y.max() == 9  # the original bundle is untouched


def test_random_split_is_stratified_balanced_and_disjoint():
    b = bundle(train_per_class=7, test_per_class=3)
    shards = make_shards(b, 3, "random", seed=5)
    assert all(not s.relabel and s.classes == tuple(range(10)) and s.val_idx is None for s in shards)
    assert sorted(len(s.train_idx) for s in shards) == [23, 23, 24]  # 70 dealt as evenly as possible
    assert [len(s.test_idx) for s in shards] == [10, 10, 10]
    y = b.train.y.numpy()
    for c in range(10):
        per_shard = [int((y[s.train_idx] == c).sum()) for s in shards]
        assert sorted(per_shard) == [2, 2, 3]  # every class in every shard, sizes differ by at most 1
    for part, n in (("train_idx", 70), ("test_idx", 30)):
        assert sorted(np.concatenate([getattr(s, part) for s in shards]).tolist()) == list(range(n))
    sub = shard_bundle(b, shards[0])
    assert sub.num_classes == 10 and torch.equal(sub.train.y, b.train.y[torch.from_numpy(shards[0].train_idx)])


def test_random_split_is_deterministic_by_seed():
    b = bundle(val_per_class=4)
    a, same, other = (make_shards(b, 2, "random", seed=s) for s in (1, 1, 2))
    for x, y in zip(a, same):
        assert np.array_equal(x.train_idx, y.train_idx) and np.array_equal(x.test_idx, y.test_idx)
        assert np.array_equal(x.val_idx, y.val_idx)
    assert not np.array_equal(a[0].train_idx, other[0].train_idx)
    assert sorted(np.concatenate([s.val_idx for s in a]).tolist()) == list(range(40))


def test_split_errors():
    b = bundle(train_per_class=2)
    with pytest.raises(ConfigError, match="^split: unknown 'iid'; valid: class, random$"):
        make_shards(b, 2, "iid", seed=0)
    with pytest.raises(ConfigError, match="^shards: class 0 has only 2 training samples"):
        make_shards(b, 3, "random", seed=0)
    with pytest.raises(ConfigError, match="^shards: cannot split 10 classes into 11"):
        make_shards(b, 11, "class", seed=0)
