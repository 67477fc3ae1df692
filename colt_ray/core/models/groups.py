"""Parameter groups: which parameters are conv/linear/output/batchnorm weights, biases, or never pruned."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from colt_ray.core.errors import ConfigError
from colt_ray.core.models.base import head_module

GROUPS = ("conv", "linear", "output", "batchnorm", "bias", "skip")
NEVER_PRUNABLE = ("bias", "skip")


def _kind(module: nn.Module, local: str, head: nn.Module) -> str:
    """Group of the parameter called ``local`` (``weight``, ``bias``, ``weight_orig``...) owned by ``module``."""
    base = local[: -len("_orig")] if local.endswith("_orig") else local  # torch.nn.utils.prune renames
    if base == "bias":
        return "bias"
    if base != "weight":
        return "skip"  # unknown parameter kinds (e.g. PReLU slopes) are never pruned
    if module is head:
        return "output"
    if isinstance(module, _ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _BatchNorm):
        return "batchnorm"
    return "skip"


def param_groups(model: nn.Module) -> dict[str, str]:
    """Every ``model.named_parameters()`` name -> its group, in that order.

    Groups: ``conv`` (Conv2d weights, incl. 1x1 shortcut and depthwise convs), ``linear`` (Linear weights other
    than the head), ``output`` (the head's weight), ``batchnorm`` (BN gamma), ``bias`` (all biases and BN beta),
    ``skip`` (every parameter inside a module with ``never_prune = True``, and parameters of unknown kinds).
    Weights under ``torch.nn.utils.prune`` (``weight_orig``) or ``parametrize`` keep their layer's group.
    """
    head = head_module(model)
    by_id: dict[int, str] = {}
    skip_prefixes: list[str] = []
    for mname, module in model.named_modules():
        if getattr(module, "never_prune", False) is True:
            skip_prefixes.append(mname)
        skipped = any(p == "" or mname == p or mname.startswith(p + ".") for p in skip_prefixes)
        for local, p in module.named_parameters(recurse=False):
            by_id.setdefault(id(p), "skip" if skipped else _kind(module, local, head))
        if parametrize.is_parametrized(module):
            for local, plist in module.parametrizations.items():
                originals = [plist.original] if hasattr(plist, "original") else []
                for p in originals:
                    by_id[id(p)] = "skip" if skipped else _kind(module, local, head)
    return {name: by_id.get(id(p), "skip") for name, p in model.named_parameters()}


def layer_weight_count(model: nn.Module) -> int:
    """Elements of the ``weight`` of every Linear, Conv and BatchNorm layer of ``model`` (biases, BatchNorm
    shifts and other parameters left out): the total the COLT code's ``prune_rate_calculator`` (``prune.py``)
    divides by, every such layer counted, the head and never-pruned skip paths included."""
    layers = (nn.Linear, _ConvNd, _BatchNorm)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, layers) and m.weight is not None)


def prunable_names(model: nn.Module, groups: Iterable[str]) -> list[str]:
    """Names of parameters whose group is in ``groups``, in ``named_parameters()`` order.

    ``bias`` and ``skip`` are never prunable and are ignored if asked for; any other unknown group name is a
    ``ConfigError("groups", ...)`` listing the valid ones.
    """
    wanted = set(groups)
    unknown = sorted(wanted - set(GROUPS))
    if unknown:
        valid = ", ".join(g for g in GROUPS if g not in NEVER_PRUNABLE)
        raise ConfigError("groups", f"unknown parameter group {unknown[0]!r}; valid: {valid}")
    wanted -= set(NEVER_PRUNABLE)
    return [name for name, group in param_groups(model).items() if group in wanted]
