"""Weight initialisations a run can choose (``--init``), applied to every Linear and Conv2d weight of a freshly
built network, as open_lth's ``models/initializers.py`` applies its initializer to every module: biases and
BatchNorm keep PyTorch's defaults.

* ``pytorch``: PyTorch's own layer defaults (kaiming uniform with a = sqrt(5): U(+-1/sqrt(fan_in))), which the
  COLT reference code keeps; the default here.
* ``kaiming_normal``: N(0, 2 / fan_in) (``torch.nn.init.kaiming_normal_`` with its defaults), open_lth's
  initializer for its LeNet, VGG and ResNet models; a 2.45x larger std than ``pytorch``.
* ``kaiming_uniform``: U(+-sqrt(6 / fan_in)), the same variance, uniform (open_lth's ``kaiming_uniform``).
* ``orthogonal``: a (semi-)orthogonal matrix per weight, rows of a conv weight flattened (open_lth's).
* ``binary``: kaiming normal, then every weight set to sign(w) x the layer's std (open_lth's ``binary``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _each_weight(fn: Callable[[torch.Tensor], None]) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fn(m.weight)

    return apply


def _binary(w: torch.Tensor) -> None:
    nn.init.kaiming_normal_(w)
    sigma = w.data.std()
    w.data = torch.sign(w.data) * sigma


INITS: dict[str, Callable[[nn.Module], None] | None] = {
    "pytorch": None,
    "kaiming_normal": _each_weight(nn.init.kaiming_normal_),
    "kaiming_uniform": _each_weight(nn.init.kaiming_uniform_),
    "orthogonal": _each_weight(nn.init.orthogonal_),
    "binary": _each_weight(_binary),
}


def initialise(model: nn.Module, name: str) -> nn.Module:
    """Apply initialisation ``name`` (one of ``INITS``) to ``model`` in place, from the current RNG state."""
    from colt_ray.core.errors import ConfigError

    if name not in INITS:
        raise ConfigError("init", f"unknown {name!r}; valid: {', '.join(INITS)}")
    fn = INITS[name]
    if fn is not None:
        with torch.no_grad():
            fn(model)
    return model
