"""Datasets: each loader on tiny files generated in the real on-disk format, errors, val split, Preprocess."""

from __future__ import annotations

import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from colt_ray.core.config import DataConfig
from colt_ray.core.data import (
    DATASETS,
    AugmentSpec,
    DatasetBundle,
    Preprocess,
    TensorSplit,
    dataset_names,
    load_dataset,
)
from colt_ray.core.data import tinyimagenet as tiny_module
from colt_ray.core.errors import ConfigError


def fails(prefix: str, exact: bool = False):
    """pytest.raises for a ConfigError whose message starts with (or, if exact, equals) ``prefix``."""
    return pytest.raises(ConfigError, match="^" + re.escape(prefix) + ("$" if exact else ""))


def load(dataset: str, root=None, **kw) -> DatasetBundle:
    return load_dataset(DataConfig(dataset=dataset, data_root=None if root is None else str(root), **kw), seed=0)


# ---- registry, digits, synthetic ---------------------------------------------------------------------------


def test_registry_lists_every_dataset_and_rejects_unknown_names():
    assert dataset_names() == sorted(
        ["digits", "synthetic", "npz", "mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet"]
    )
    with fails("dataset: unknown 'imagenet'; valid: cifar10, cifar100, digits"):
        load("imagenet")
    assert DATASETS.get("cifar10").needs_root and not DATASETS.get("digits").needs_root


def test_digits_loads_with_fixed_80_20_split_independent_of_run_seed():
    a = load_dataset(DataConfig(), seed=1)
    b = load_dataset(DataConfig(), seed=2)
    assert a.name == "digits" and a.num_classes == 10 and a.in_shape == (1, 8, 8)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 359  # 20% of each class, rounded
    assert a.train.x.dtype == torch.float32 and a.train.x.shape == (1438, 1, 8, 8)
    assert float(a.train.x.min()) >= 0.0 and float(a.train.x.max()) <= 1.0
    assert a.train.y.dtype == torch.int64 and set(a.train.y.tolist()) == set(range(10)) == set(a.test.y.tolist())
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.val is None and not a.augment.active
    assert np.allclose(a.mean, [a.train.x.mean().item()]) and np.allclose(a.std, [a.train.x.std(unbiased=False).item()])


def test_synthetic_is_deterministic_balanced_and_learnable():
    a, b = load("synthetic"), load("synthetic")
    assert (len(a.train), len(a.test), a.num_classes, a.in_shape) == (600, 200, 10, (1, 8, 8))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.train.y.bincount().tolist() == [60] * 10 and a.test.y.bincount().tolist() == [20] * 10
    centroids = torch.stack([a.train.x[a.train.y == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(a.test.x.flatten(1), centroids).argmin(1)
    assert (pred == a.test.y).float().mean() > 0.9  # nearest centroid already learns it


def test_tensor_split_subset_accepts_lists_arrays_and_masks():
    s = TensorSplit(torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1), torch.tensor([0, 1, 0, 1, 2]))
    assert s.subset([4, 0]).y.tolist() == [2, 0] and len(s) == 5
    assert s.subset(np.array([1, 3])).x.flatten().tolist() == [1.0, 3.0]
    assert s.subset(s.y == 0).x.flatten().tolist() == [0.0, 2.0]


# ---- npz ------------------------------------------------------------------------------------------------------


def _npz_images(n: int) -> np.ndarray:
    """(n, 3, 4, 5) uint8 whose value encodes (sample, channel, row, col)."""
    i, c, r, w = np.meshgrid(np.arange(n), np.arange(3), np.arange(4), np.arange(5), indexing="ij")
    return (i * 60 + c * 20 + r * 5 + w).astype(np.uint8)


@pytest.mark.parametrize("layout", ["NHW", "NHW1", "NHW3", "N1HW", "N3HW", "float"])
def test_npz_accepts_every_x_layout(tmp_path, layout):
    full = {"x_train": _npz_images(4), "x_test": _npz_images(2)}
    arrays = {}
    for key, x in full.items():
        arrays[key] = {
            "NHW": x[:, 0],
            "NHW1": x[:, 0, :, :, None],
            "NHW3": x.transpose(0, 2, 3, 1),
            "N1HW": x[:, :1],
            "N3HW": x,
            "float": x.astype(np.float32) / 255,
        }[layout]
    np.savez(tmp_path / "d.npz", **arrays, y_train=np.array([0, 2, 1, 2]), y_test=np.array([4, 0]))
    b = load("npz", tmp_path / "d.npz")
    channels = 3 if layout in ("NHW3", "N3HW", "float") else 1
    expected = full["x_train"][:, :channels]
    assert b.in_shape == (channels, 4, 5) and b.num_classes == 5  # largest label (in y_test) + 1
    if layout == "float":
        assert b.train.x.dtype == torch.float32 and np.allclose(b.train.x.numpy() * 255, expected)
    else:
        assert b.train.x.dtype == torch.uint8 and np.array_equal(b.train.x.numpy(), expected)
    assert b.train.y.tolist() == [0, 2, 1, 2] and b.test.y.tolist() == [4, 0]
    assert np.allclose(b.mean, expected.astype(np.float64).mean(axis=(0, 2, 3)) / 255)


def test_npz_missing_key_and_missing_file_are_config_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((2, 3, 3), np.uint8), y_train=np.zeros(2, np.int64), x_test=np.zeros((1, 3, 3)))
    with fails(f"data-root: {path} has no 'y_test' array; needs x_train, y_train, x_test, y_test", exact=True):
        load("npz", path)
    with fails(f"data-root: {tmp_path / 'nope.npz'} does not exist", exact=True):
        load("npz", tmp_path / "nope.npz")
    with fails("data-root: dataset npz needs --data-root FILE.npz"):
        load("npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with fails(f"data-root: cannot read {tmp_path / 'junk.npz'}"):
        load("npz", tmp_path / "junk.npz")
    with fails("download: dataset npz cannot be downloaded"):
        load("npz", path, download=True)


# ---- MNIST / Fashion-MNIST --------------------------------------------------------------------------------------


def _write_idx(path: Path, arr: np.ndarray, magic: int, gz: bool) -> None:
    data = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _mnist_tree(root: Path, folder: str = "MNIST", gz: bool = False) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train": (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.array([3, 1, 4, 1, 5], np.uint8)),
        "t10k": (rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), np.array([9, 2], np.uint8)),
    }
    for prefix, (x, y) in arrays.items():
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x, 2051, gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, 2049, gz)
    return {"x_train": arrays["train"][0], "y_train": arrays["train"][1], "x_test": arrays["t10k"][0]}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_mnist_idx_files_load_with_the_right_pixels_and_labels(tmp_path, gz):
    arrays = _mnist_tree(tmp_path, gz=gz)
    b = load("mnist", tmp_path)
    assert (b.num_classes, b.in_shape, len(b.train), len(b.test)) == (10, (1, 28, 28), 5, 2)
    assert b.train.x.dtype == torch.uint8 and np.array_equal(b.train.x[:, 0].numpy(), arrays["x_train"])
    assert np.array_equal(b.test.x[:, 0].numpy(), arrays["x_test"])
    assert b.train.y.tolist() == [3, 1, 4, 1, 5] and b.test.y.tolist() == [9, 2]
    if not gz:  # the files are real IDX files: torchvision's own reader agrees
        from torchvision.datasets import MNIST

        tv = MNIST(str(tmp_path), train=True, download=False)
        assert np.array_equal(tv.data.numpy(), arrays["x_train"]) and tv.targets.tolist() == [3, 1, 4, 1, 5]


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    arrays = _mnist_tree(tmp_path, folder="FashionMNIST", gz=True)
    b = load("fashion-mnist", tmp_path)
    assert np.array_equal(b.train.x[:, 0].numpy(), arrays["x_train"]) and b.class_names[9] == "Ankle boot"
    with fails(f"data-root: missing {tmp_path / 'MNIST' / 'raw' / 'train-images-idx3-ubyte'} (or .gz)"):
        load("mnist", tmp_path)


def test_truncated_or_wrong_idx_file_names_the_file(tmp_path):
    _mnist_tree(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with fails(f"data-root: cannot read {images}: ") as err:
        load("mnist", tmp_path)
    assert "truncated" in str(err.value) and "\n" not in str(err.value)
    labels = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    _write_idx(images, np.zeros((5, 28, 28), np.uint8), 2051, gz=False)
    _write_idx(labels, np.zeros((2, 28, 28), np.uint8), 2051, gz=False)  # an image file in the labels' place
    with fails(f"data-root: cannot read {labels}: magic number 2051, expected 2049"):
        load("mnist", tmp_path)
    labels.unlink()
    with fails(f"data-root: missing {labels} (or .gz)"):
        load("mnist", tmp_path)


# ---- CIFAR --------------------------------------------------------------------------------------------------


def _cifar_rows(colours: list[tuple[int, int, int]]) -> np.ndarray:
    """One row per image in CIFAR's layout: 1024 R values, then 1024 G, then 1024 B."""
    return np.stack([np.repeat(np.array(c, np.uint8), 1024) for c in colours])


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_pickles_load_with_rgb_planes_and_labels(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        data = _cifar_rows([(10 * i, 20, 30), (1, 2, 3)])
        _pickle(folder / f"data_batch_{i}", {b"batch_label": b"x", b"labels": [i, 0], b"data": data})
    test = _cifar_rows([(200, 100, 50)])
    test[0, 2 * 32 + 3] = 7  # R plane, row 2, column 3
    _pickle(folder / "test_batch", {b"labels": [9], b"data": test})
    b = load("cifar10", tmp_path)
    assert (b.num_classes, b.in_shape, len(b.train), len(b.test)) == (10, (3, 32, 32), 10, 1)
    assert b.train.y.tolist() == [1, 0, 2, 0, 3, 0, 4, 0, 5, 0] and b.test.y.tolist() == [9]
    assert b.train.x[4, :, 5, 6].tolist() == [30, 20, 30] and b.train.x[1, :, 31, 31].tolist() == [1, 2, 3]
    assert b.test.x[0, :, 0, 0].tolist() == [200, 100, 50] and b.test.x[0, :, 2, 3].tolist() == [7, 100, 50]
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.augment == AugmentSpec(crop_padding=4, hflip=True)
    assert b.class_names[0] == "airplane"
    assert not load("cifar10", tmp_path, augment=False).augment.active

    (folder / "data_batch_3").unlink()
    with fails(f"data-root: missing {folder / 'data_batch_3'}"):
        load("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with fails(f"data-root: cannot read {folder / 'data_batch_3'}"):
        load("cifar10", tmp_path)


def test_cifar100_uses_fine_labels_and_meta_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = {b"fine_labels": [0, 99, 42], b"coarse_labels": [0, 1, 2], b"data": _cifar_rows([(1, 2, 3)] * 3)}
    _pickle(folder / "train", train)
    _pickle(folder / "test", {b"fine_labels": [5], b"coarse_labels": [0], b"data": _cifar_rows([(9, 8, 7)])})
    _pickle(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []})
    b = load("cifar100", tmp_path, val_fraction=0.0)
    assert b.num_classes == 100 and b.train.y.tolist() == [0, 99, 42] and b.test.y.tolist() == [5]
    assert b.test.x[0, :, 17, 4].tolist() == [9, 8, 7] and b.class_names[42] == "c42"


def test_missing_roots_and_folders_name_the_path(tmp_path):
    with fails("data-root: dataset cifar10 needs --data-root DIR containing cifar-10-batches-py/", exact=True):
        load("cifar10")
    with fails(f"data-root: {tmp_path / 'absent'} does not exist", exact=True):
        load("cifar100", tmp_path / "absent")
    with fails(f"data-root: missing {tmp_path / 'cifar-100-python'}"):
        load("cifar100", tmp_path)
    with fails(f"data-root: missing {tmp_path / 'tiny-imagenet-200'}"):
        load("tinyimagenet", tmp_path)


# ---- Tiny ImageNet --------------------------------------------------------------------------------------------

WNIDS = ["n0003", "n0001", "n0002"]  # file order, not sorted order, defines the labels
COLOURS = {"n0003": (255, 0, 0), "n0001": (0, 255, 0), "n0002": (0, 0, 255)}


def _tiny_tree(root: Path) -> Path:
    from PIL import Image

    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for wnid in WNIDS:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), COLOURS[wnid]).save(folder / f"{wnid}_{j}.JPEG", quality=95)
    lines = []
    for j, wnid in enumerate(["n0002", "n0003", "n0001", "n0002"]):
        Image.new("RGB", (64, 64), COLOURS[wnid]).save(base / "val" / "images" / f"val_{j}.JPEG", quality=95)
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_tinyimagenet_loads_labels_in_wnids_order_and_caches(tmp_path, monkeypatch):
    base = _tiny_tree(tmp_path)
    b = load("tinyimagenet", tmp_path)
    assert (b.num_classes, b.in_shape, len(b.train), len(b.test)) == (3, (3, 64, 64), 6, 4)
    assert b.train.y.tolist() == [0, 0, 1, 1, 2, 2] and b.test.y.tolist() == [2, 0, 1, 2]
    assert b.class_names == tuple(WNIDS) and b.augment.active
    for split in (b.train, b.test):
        for x, y in zip(split.x, split.y):
            colour = torch.tensor(COLOURS[WNIDS[y]], dtype=torch.int16)
            assert (x.to(torch.int16) - colour[:, None, None]).abs().max() <= 4  # JPEG is lossy
    assert np.allclose(b.mean, [1 / 3] * 3, atol=0.02)
    assert (base / "colt_ray_cache.npz").is_file()

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache is valid")

    monkeypatch.setattr(tiny_module, "decode", no_decoding)
    again = load("tinyimagenet", tmp_path)
    assert torch.equal(again.train.x, b.train.x) and torch.equal(again.test.y, b.test.y) and again.mean == b.mean
    monkeypatch.undo()

    from PIL import Image

    Image.new("RGB", (64, 64), (0, 255, 0)).save(base / "train" / "n0001" / "images" / "n0001_9.JPEG")
    changed = load("tinyimagenet", tmp_path)  # the file list changed: the cache is rebuilt
    assert changed.train.y.tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_tinyimagenet_missing_or_broken_files_name_the_path(tmp_path):
    base = _tiny_tree(tmp_path)
    (base / "val" / "images" / "val_1.JPEG").unlink()
    with fails(f"data-root: missing {base / 'val' / 'images' / 'val_1.JPEG'}", exact=True):
        load("tinyimagenet", tmp_path)
    (base / "val" / "images" / "val_1.JPEG").write_bytes(b"not a jpeg")
    with fails(f"data-root: cannot read {base / 'val' / 'images' / 'val_1.JPEG'}"):
        load("tinyimagenet", tmp_path)
    (base / "val" / "val_annotations.txt").unlink()
    with fails(f"data-root: missing {base / 'val' / 'val_annotations.txt'}"):
        load("tinyimagenet", tmp_path)
    (base / "wnids.txt").write_text("n0003\nn0004\n")
    with fails(f"data-root: missing {base / 'train' / 'n0004' / 'images'}"):
        load("tinyimagenet", tmp_path)


# ---- validation hold-out ----------------------------------------------------------------------------------------


def test_val_fraction_holds_out_a_stratified_disjoint_subset():
    full = load("synthetic")
    b = load_dataset(DataConfig(dataset="synthetic", val_fraction=0.25), seed=3)
    assert len(b.train) == 450 and len(b.val) == 150 and len(b.test) == 200
    assert b.val.y.bincount().tolist() == [15] * 10 and b.train.y.bincount().tolist() == [45] * 10
    rows = lambda x: {tuple(r) for r in x.flatten(1).tolist()}  # noqa: E731  (synthetic rows are all distinct)
    assert rows(b.train.x).isdisjoint(rows(b.val.x)) and rows(b.train.x) | rows(b.val.x) == rows(full.train.x)
    assert b.mean == full.mean  # statistics of the full training set, independent of the seed
    same = load_dataset(DataConfig(dataset="synthetic", val_fraction=0.25), seed=3)
    other = load_dataset(DataConfig(dataset="synthetic", val_fraction=0.25), seed=4)
    assert torch.equal(same.val.x, b.val.x) and not torch.equal(other.val.x, b.val.x)
    with fails("val-fraction: must be in [0, 1)"):
        load("synthetic", val_fraction=1.0)


# ---- Preprocess -------------------------------------------------------------------------------------------------


def test_preprocess_normalises_uint8_and_float_by_hand():
    p = Preprocess((0.5,), (0.25,))
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1, 1)
    assert torch.allclose(p(x).flatten(), torch.tensor([-2.0, 2.0, -1.2]))
    assert torch.allclose(p(x.float() / 255).flatten(), torch.tensor([-2.0, 2.0, -1.2]))
    rgb = Preprocess((0.0, 0.5, 1.0), (1.0, 0.5, 2.0))(torch.full((1, 3, 2, 2), 0.5))
    assert rgb[0, :, 0, 0].tolist() == [0.5, 0.0, -0.25] and rgb.dtype == torch.float32


def test_no_augmentation_without_generator_or_inactive_spec():
    x = torch.rand(4, 3, 6, 6)
    plain = Preprocess((0.0,) * 3, (1.0,) * 3)(x)
    assert torch.equal(plain, x)
    aug = Preprocess((0.0,) * 3, (1.0,) * 3, AugmentSpec(crop_padding=2, hflip=True, rotation=15))
    assert torch.equal(aug(x), x)
    assert torch.equal(Preprocess((0.0,) * 3, (1.0,) * 3, AugmentSpec())(x, torch.Generator().manual_seed(0)), x)


def test_augmentation_is_deterministic_given_the_generator_and_keeps_shape():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    original = x.clone()
    p = Preprocess((0.5,) * 3, (0.5,) * 3, AugmentSpec(crop_padding=2, hflip=True, rotation=20))
    a = p(x, torch.Generator().manual_seed(7))
    b = p(x, torch.Generator().manual_seed(7))
    c = p(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, original)


def test_flip_gives_each_sample_or_its_mirror():
    x = torch.arange(2 * 16, dtype=torch.float32).view(32, 1, 1, 1).expand(32, 1, 2, 3) / 100
    x = x + torch.tensor([0.0, 0.001, 0.002])  # asymmetric along W
    out = Preprocess((0.0,), (1.0,), AugmentSpec(hflip=True))(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, s.flip(2)) for o, s in zip(out, x)]
    kept = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_crop_is_a_window_of_the_zero_padded_image():
    x = (torch.arange(9, dtype=torch.float32) + 1).view(1, 1, 3, 3).repeat(20, 1, 1, 1) / 10
    out = Preprocess((0.0,), (1.0,), AugmentSpec(crop_padding=1))(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x[0, 0], (1, 1, 1, 1))
    windows = [padded[dy : dy + 3, dx : dx + 3] for dy in range(3) for dx in range(3)]
    hits = [next(i for i, w in enumerate(windows) if torch.equal(o[0], w)) for o in out]  # StopIteration = bad crop
    assert len(set(hits)) > 1


def test_rotation_keeps_a_centred_disc_and_zero_fills_corners():
    yy, xx = torch.meshgrid(torch.arange(9.0) - 4, torch.arange(9.0) - 4, indexing="ij")
    disc = ((yy**2 + xx**2) <= 4).float().expand(4, 1, 9, 9)
    full = torch.ones(4, 1, 9, 9)
    p = Preprocess((0.0,), (1.0,), AugmentSpec(rotation=45))
    assert torch.allclose(p(disc, torch.Generator().manual_seed(0))[:, :, 4, 4], torch.ones(4, 1))
    corners = p(full, torch.Generator().manual_seed(0))[:, 0, 0, 0]
    assert (corners < 1).all()  # all four angles are nonzero, so a corner maps outside the image


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_preprocess_on_cuda_matches_cpu_given_a_cpu_generator():
    x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    spec = AugmentSpec(crop_padding=2, hflip=True, rotation=10)
    cpu = Preprocess((0.5,) * 3, (0.25,) * 3, spec)(x, torch.Generator().manual_seed(3))
    gpu = Preprocess((0.5,) * 3, (0.25,) * 3, spec, device="cuda")(x, torch.Generator().manual_seed(3))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def test_preprocess_from_bundle_uses_standard_augmentation():
    b = load("synthetic")
    assert Preprocess.from_bundle(b).mean == b.mean and not Preprocess.from_bundle(b).augment.active


def test_tinyimagenet_unwritable_folder_only_warns(tmp_path, monkeypatch):
    base = _tiny_tree(tmp_path)

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(tiny_module.tempfile, "mkstemp", read_only)
    with pytest.warns(UserWarning, match="could not cache"):
        b = load("tinyimagenet", tmp_path)
    assert len(b.train) == 6 and not (base / "colt_ray_cache.npz").exists()
