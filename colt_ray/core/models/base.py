"""The model registry, seeded construction, the fit check and the output layer ("head").

Every architecture registers a :class:`ModelSpec` in :data:`MODELS` (field name ``arch``). A builder takes
``(in_shape, num_classes)`` with ``in_shape = (C, H, W)`` and returns a module that sets ``head_name``, the
attribute path of its output ``nn.Linear``. Models use ``nn.ReLU`` modules for every activation (no functional
or in-place ReLU) so later features can swap activations by replacing modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from colt_ray.core.errors import ConfigError
from colt_ray.core.registry import Registry

InShape = tuple[int, int, int]
Builder = Callable[[InShape, int], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture.

    ``builder(in_shape, num_classes)`` makes a fresh model with the global torch RNG (seed it first, or use
    :func:`build_model`). ``min_size`` is the smallest height (= width) the architecture accepts.
    """

    name: str
    builder: Builder
    min_size: int
    description: str


MODELS: Registry[ModelSpec] = Registry("arch")


def register(name: str, min_size: int, description: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``name`` in :data:`MODELS`."""

    def deco(builder: Builder) -> Builder:
        MODELS.add(name, ModelSpec(name=name, builder=builder, min_size=min_size, description=description))
        return builder

    return deco


# ---- fit check and construction -------------------------------------------------------------------


def _shape(in_shape: Sequence[int]) -> InShape:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError("in_shape", f"expected (channels, height, width) of positive ints, got {tuple(in_shape)}")
    return shape  # type: ignore[return-value]


def check_fits(arch: str, in_shape: Sequence[int]) -> None:
    """Raise ``ConfigError("arch", ...)`` if ``arch`` is unknown or its ``min_size`` exceeds ``in_shape``'s H or W."""
    spec = MODELS.get(arch)
    c, h, w = _shape(in_shape)
    if min(h, w) < spec.min_size:
        n = spec.min_size
        raise ConfigError("arch", f"{arch} does not fit input {c}x{h}x{w} of this dataset: needs at least {n}x{n}")


def build_model(arch: str, in_shape: Sequence[int], num_classes: int, seed: int, init: str = "pytorch") -> nn.Module:
    """Build ``arch`` for inputs ``in_shape = (C, H, W)`` and ``num_classes`` outputs, initialised from ``seed``
    with the weight initialisation ``init`` (``models.init.INITS``; ``pytorch``: the layers' own defaults).

    Construction runs inside ``torch.random.fork_rng(devices=[])`` after ``torch.manual_seed(seed)``: the same
    seed gives bit-identical parameters and the caller's CPU RNG state is left untouched. The model is on CPU.
    """
    from colt_ray.core.models.init import initialise

    check_fits(arch, in_shape)
    if int(num_classes) < 1:
        raise ConfigError("num_classes", f"must be at least 1, got {num_classes}")
    spec = MODELS.get(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = initialise(spec.builder(_shape(in_shape), int(num_classes)), init)
    if not isinstance(getattr(model, "head_name", None), str):
        raise TypeError(f"model {arch!r} does not set head_name")
    return model


# ---- output layer ---------------------------------------------------------------------------------


def head_module(model: nn.Module) -> nn.Linear:
    """The output layer: the submodule at the attribute path ``model.head_name`` (e.g. ``"fc"``)."""
    name = getattr(model, "head_name", None)
    if not isinstance(name, str):
        raise TypeError(f"{type(model).__name__} has no head_name attribute")
    head = model.get_submodule(name)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__}.{name} is {type(head).__name__}, not nn.Linear")
    return head


def replace_head(model: nn.Module, num_classes: int, seed: int) -> None:
    """Swap the output layer for a fresh ``nn.Linear(in_features, num_classes)``, in place.

    The new layer has PyTorch's default Linear init drawn under ``fork_rng`` + ``manual_seed(seed)`` (same seed,
    same head), keeps the old head's bias setting, device and dtype, and leaves every other parameter untouched.
    """
    old = head_module(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        new = nn.Linear(old.in_features, int(num_classes), bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attr = model.head_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


# ---- shared layer helpers -------------------------------------------------------------------------


def conv_bn_relu(c_in: int, c_out: int, bias: bool = True) -> nn.Sequential:
    """3x3 conv (padding 1) -> BatchNorm2d -> ReLU module."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias), nn.BatchNorm2d(c_out), nn.ReLU())


def pooled(size: int, pools: int) -> int:
    """Spatial size after ``pools`` 2x2/stride-2 max pools (each floors)."""
    return size >> pools


class PooledClassifier(nn.Module):
    """Base of the CNNs whose head is global average pooling and one Linear output layer ``fc``."""

    head_name = "fc"

    def add_head(self, channels: int, num_classes: int) -> None:
        """Create the head (call it where the head's parameters should be created, for the init order)."""
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def head(self, features: Tensor) -> Tensor:
        return self.fc(self.flatten(self.avgpool(features)))
