"""Small plain convnets: Conv-2/4/6 of Frankle & Carbin (2019) and the Conv-3 of the official COLT code."""

from __future__ import annotations

from torch import Tensor, nn

from colt_ray.core.models.base import InShape, PooledClassifier, pooled, register

# "M" = 2x2 max pool; ints = 3x3 conv (padding 1) + ReLU with that many filters.
CONV_PLANS = {
    "conv2": [64, 64, "M"],
    "conv4": [64, 64, "M", 128, 128, "M"],
    "conv6": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
}


class ConvNet(nn.Module):
    """Frankle & Carbin's Conv-n: ``plan`` of convs and pools, then FC 256 -> ReLU -> FC 256 -> ReLU -> head.

    No BatchNorm (as in the paper). The flatten size follows ``in_shape``.
    """

    def __init__(self, in_shape: InShape, num_classes: int, plan: list, fc_widths: tuple[int, ...] = (256, 256)):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, spec, 3, padding=1), nn.ReLU()]
                c = spec
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        pools = plan.count("M")
        width = c * pooled(h, pools) * pooled(w, pools)
        fcs: list[nn.Module] = []
        for f in fc_widths:
            fcs += [nn.Linear(width, f), nn.ReLU()]
            width = f
        self.classifier = nn.Sequential(*fcs)
        self.fc = nn.Linear(width, num_classes)
        self.head_name = "fc"

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.classifier(self.flatten(self.features(x))))


def _conv_builder(plan: list):
    def build(in_shape: InShape, num_classes: int) -> nn.Module:
        return ConvNet(in_shape, num_classes, plan)

    return build


for _name, _plan in CONV_PLANS.items():
    _convs = [s for s in _plan if s != "M"]
    register(
        _name,
        min_size=2 ** _plan.count("M"),
        description=f"Frankle & Carbin {_name.capitalize()}: convs {_convs}, FC 256-256-out",
    )(_conv_builder(_plan))


class COLTConv3(PooledClassifier):
    """The ``conv3`` of the official COLT code (github.com/ismail31416/COLT, ``archs/*/conv3.py``).

    Three stages of 3x3 conv (padding 1, with bias) -> BatchNorm -> 2x2 max pool -> ReLU, with 64, 128 and 256
    filters; then adaptive average pool to 1x1 and a single Linear(256, num_classes) head (``fc``; the
    original's commented-out hidden FC layer is left out, as there). The original hard-codes 3 input
    channels; here they follow ``in_shape``. Needs H, W >= 8 (three pools).
    """

    def __init__(self, in_shape: InShape, num_classes: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_shape[0]
        for out in (width, width * 2, width * 4):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.MaxPool2d(2), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.add_head(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register("conv3", min_size=8, description="COLT's Conv-3: 3x (conv+BN+pool+ReLU) 64-128-256, avgpool, Linear")
def conv3(in_shape: InShape, num_classes: int) -> nn.Module:
    """The official COLT code's 3-conv network (see :class:`COLTConv3`)."""
    return COLTConv3(in_shape, num_classes)
