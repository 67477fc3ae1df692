"""Extra skip paths for residual blocks (docs/algorithms.md section 3, after Jaiswal et al.'s ToST).

Each ``BasicBlock`` gets two learned paths, each a 1x1 conv + BatchNorm, wired as the reference code does
(VITA-Group/ToST, ``skip_connection/models/resnet_modified.py``):

* ``skip1`` from the block input (with the block's stride), added after ``bn1``, before the first activation;
* ``skip2`` from the intermediate activation, added after ``bn2`` beside the block's shortcut, before the
  second activation.

The path convs start at the constant 1e-4 and their BatchNorms at PyTorch's defaults (scale 1, shift 0), as in
the reference: in training mode the BatchNorm renormalises the tiny conv output, so the paths contribute from
the first step. The paths are ``never_prune`` modules, so ``param_groups`` puts them in group "skip": never in
a mask; they count in ``sparsity_all`` (every parameter), not in ``sparsity`` (the prune groups).
"""

from __future__ import annotations

from torch import Tensor, nn

from colt_ray.core.errors import ConfigError
from colt_ray.core.models import BasicBlock

SKIP_INIT = 1e-4


class SkipPath(nn.Sequential):
    """1x1 conv (no bias, initialised to the constant ``SKIP_INIT``) + BatchNorm (defaults); never pruned."""

    never_prune = True

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        nn.init.constant_(self[0].weight, SKIP_INIT)


class SkipBasicBlock(BasicBlock):
    """A ``BasicBlock`` whose two normalised conv outputs each get an extra ``SkipPath`` added."""

    skip1: SkipPath
    skip2: SkipPath

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)) + self.skip1(x))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x) + self.skip2(out))


def residual_blocks(model: nn.Module) -> list[BasicBlock]:
    """Every ``BasicBlock`` of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, BasicBlock)]


def add_skip_paths(model: nn.Module, arch: str = "this architecture") -> int:
    """Give every residual block its two skip paths, in place; return the number of blocks changed.

    Raises ConfigError if ``model`` has no residual block. Parameter names of the original model are kept
    (the paths add ``<block>.skip1.*`` and ``<block>.skip2.*``), so masks and rewind points still fit.
    """
    blocks = residual_blocks(model)
    if not blocks:
        raise ConfigError(
            "tweaks", f"skip-paths needs residual blocks; {arch} has none (valid: resnet18, resnet20, resnet34)"
        )
    for block in blocks:
        if isinstance(block, SkipBasicBlock):
            continue
        c1, c2 = block.conv1, block.conv2
        device, dtype = c1.weight.device, c1.weight.dtype
        block.skip1 = SkipPath(c1.in_channels, c1.out_channels, c1.stride[0]).to(device, dtype)
        block.skip2 = SkipPath(c2.in_channels, c2.out_channels, 1).to(device, dtype)
        block.__class__ = SkipBasicBlock  # same attributes plus the two paths; survives deepcopy and pickling
    return len(blocks)


def skip_state_keys(model: nn.Module) -> set[str]:
    """The state-dict keys (parameters and BatchNorm buffers) of ``model``'s skip paths."""
    prefixes = [f"{name}." for name, m in model.named_modules() if isinstance(m, SkipPath)]
    return {k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)}


def skip_parameter_count(model: nn.Module) -> int:
    """Number of parameters in skip paths (dense, reported apart from the pruned weights)."""
    return sum(p.numel() for m in model.modules() if isinstance(m, SkipPath) for p in m.parameters())
