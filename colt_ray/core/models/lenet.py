"""LeNet-300-100, the fully connected network of the lottery ticket papers."""

from __future__ import annotations

from math import prod

from torch import Tensor, nn

from colt_ray.core.models.base import InShape, register


class LeNet300(nn.Module):
    """Flatten -> Linear 300 -> ReLU -> Linear 100 -> ReLU -> Linear ``num_classes`` (the head, ``fc``)."""

    def __init__(self, in_shape: InShape, num_classes: int, hidden: tuple[int, ...] = (300, 100)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)
        self.head_name = "fc"

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layers(x))


@register("lenet300", min_size=1, description="LeNet-300-100: fully connected 300-100-out")
def lenet300(in_shape: InShape, num_classes: int) -> nn.Module:
    """LeNet-300-100 sized for ``in_shape``."""
    return LeNet300(in_shape, num_classes)
