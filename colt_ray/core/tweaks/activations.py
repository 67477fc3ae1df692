"""Soft activations: every ``nn.ReLU`` module of a model replaced by swish (SiLU), mish, GELU, ELU, softplus,
pswish or LiSHT: the activations of ToST's ``activation_list`` (VITA-Group/ToST, ``label-smoothening/models/
oresnet.py``, classes in ``LRsI/activations.py``).

Models use ``nn.ReLU`` modules for every activation (see ``colt_ray.core.models.base``), so a swap is a walk
over the module tree. The replacements have no parameters: the state dict, the prunable tensors and the
masks of a ticket are the same with any activation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from colt_ray.core.errors import ConfigError


class PSwish(nn.Module):
    """ToST's ``swish_parametric`` (``SwishParameteric``): x * sigmoid(2x). Its beta is a fixed 2 there (the
    forward's default argument, never passed), not a learned parameter, and so here."""

    BETA = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.BETA * x)


class LiSHT(nn.Module):
    """ToST's ``lisht`` (``LiSHT``): x * tanh(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(x)


# the activations a run may use (config: TweaksConfig.activation); relu = the architecture's own (no change)
FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "pswish": PSwish,  # ToST's name: swish_parametric
    "lisht": LiSHT,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name; ConfigError listing the valid names otherwise."""
    if name not in FACTORIES:
        raise ConfigError("activation", f"unknown {name!r}; valid: {', '.join(FACTORIES)}")
    return FACTORIES[name]()


def swap_activations(model: nn.Module, name: str) -> int:
    """Replace every ``nn.ReLU`` in ``model`` (in place) by activation ``name``; return how many were replaced."""
    make_activation(name)  # validate first, so a bad name changes nothing
    if name == "relu":
        return 0
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, child_name, make_activation(name))
                count += 1
    return count
