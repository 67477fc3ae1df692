"""CIFAR MobileNetV2 in the style of kuangliu/pytorch-cifar (stride-1 stem, stride 1 in the second stage)."""

from __future__ import annotations

from torch import Tensor, nn

from colt_ray.core.models.base import InShape, PooledClassifier, register

# (expansion, out_channels, num_blocks, stride) per stage; kuangliu's CIFAR variant.
MOBILENETV2_CFG = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 1 here (2 in ImageNet MobileNetV2)
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class InvertedResidual(nn.Module):
    """Expand (1x1 conv+BN+ReLU) -> depthwise 3x3 (+BN+ReLU) -> project (1x1 conv+BN), plus a shortcut.

    With stride 1 the shortcut is added (identity, or 1x1 conv+BN when channels change); with stride 2 there is
    no residual connection (as in kuangliu's code).
    """

    def __init__(self, c_in: int, c_out: int, expansion: int, stride: int):
        super().__init__()
        self.stride = stride
        planes = expansion * c_in
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride == 1 and c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(PooledClassifier):
    """Stem 3x3 conv (32, stride 1)+BN+ReLU, inverted residual stages, 1x1 conv 1280+BN+ReLU, avgpool, ``fc``."""

    def __init__(self, in_shape: InShape, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = nn.ReLU()
        blocks = []
        c = 32
        for expansion, out, n, stride in MOBILENETV2_CFG:
            for s in [stride] + [1] * (n - 1):
                blocks.append(InvertedResidual(c, out, expansion, s))
                c = out
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(c, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.act2 = nn.ReLU()
        self.add_head(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.act1(self.bn1(self.conv1(x))))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.head(out)


@register("mobilenetv2", min_size=8, description="CIFAR MobileNetV2 (kuangliu/pytorch-cifar), avgpool, Linear")
def mobilenetv2(in_shape: InShape, num_classes: int) -> nn.Module:
    """CIFAR MobileNetV2: three stride-2 stages, so inputs of at least 8x8."""
    return MobileNetV2(in_shape, num_classes)
