"""``synthetic``: a tiny, learnable, deterministic 10-class problem for tests (class prototypes + noise)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .bundle import DatasetBundle, make_bundle
from .spec import DatasetSpec, register

NUM_CLASSES = 10
SHAPE = (1, 8, 8)
TRAIN_PER_CLASS = 60
TEST_PER_CLASS = 20
NOISE = 0.4
SEED = 20240607  # fixed: the data never depends on the run seed


def _sample(protos: torch.Tensor, per_class: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    y = y[torch.randperm(len(y), generator=g)]
    x = protos[y] + NOISE * torch.randn((len(y), *SHAPE), generator=g)
    return x.clamp_(0.0, 1.0).to(torch.float32), y.to(torch.int64)


def load_synthetic(root: Optional[Path] = None, download: bool = False) -> DatasetBundle:
    """600 train / 200 test float32 images (1, 8, 8) in [0, 1], balanced over 10 classes, always the same."""
    g = torch.Generator()
    g.manual_seed(SEED)
    protos = torch.rand((NUM_CLASSES, *SHAPE), generator=g)
    x_train, y_train = _sample(protos, TRAIN_PER_CLASS, g)
    x_test, y_test = _sample(protos, TEST_PER_CLASS, g)
    return make_bundle("synthetic", x_train, y_train, x_test, y_test, num_classes=NUM_CLASSES)


register(DatasetSpec("synthetic", load_synthetic, "10-class prototypes + noise, (1, 8, 8), for tests"))
