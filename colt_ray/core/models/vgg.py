"""CIFAR VGG-16/19 with BatchNorm, in the style of open_lth's ``cifar_vgg``."""

from __future__ import annotations

from torch import Tensor, nn

from colt_ray.core.models.base import InShape, PooledClassifier, conv_bn_relu, register

# Five stages of 3x3 conv+BN+ReLU, a 2x2 max pool between stages ("M").
VGG_PLANS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(PooledClassifier):
    """``features`` (conv3x3+BN+ReLU blocks and max pools) -> global average pool -> Linear head ``fc``."""

    def __init__(self, in_shape: InShape, num_classes: int, plan: list):
        super().__init__()
        c = in_shape[0]
        layers: list[nn.Module] = []
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn_relu(c, spec))
                c = spec
        self.features = nn.Sequential(*layers)
        self.add_head(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register("vgg16", min_size=32, description="CIFAR VGG-16 with BatchNorm (open_lth cifar_vgg_16), avgpool, Linear")
def vgg16(in_shape: InShape, num_classes: int) -> nn.Module:
    """CIFAR VGG-16 (13 conv+BN+ReLU layers)."""
    return VGG(in_shape, num_classes, VGG_PLANS["vgg16"])


@register("vgg19", min_size=32, description="CIFAR VGG-19 with BatchNorm (open_lth cifar_vgg_19), avgpool, Linear")
def vgg19(in_shape: InShape, num_classes: int) -> nn.Module:
    """CIFAR VGG-19 (16 conv+BN+ReLU layers)."""
    return VGG(in_shape, num_classes, VGG_PLANS["vgg19"])
