"""CIFAR ResNets: ResNet-18/34 with a 3x3 stride-1 stem (kuangliu/pytorch-cifar) and He et al.'s ResNet-20."""

from __future__ import annotations

from torch import Tensor, nn

from colt_ray.core.models.base import InShape, PooledClassifier, register


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers plus a shortcut: ``act2(bn2(conv2(act1(bn1(conv1(x))))) + shortcut(x))``.

    ``shortcut`` is an empty ``nn.Sequential`` (identity) when shapes match, else 1x1 conv (stride) + BN.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(PooledClassifier):
    """Stem (3x3 conv stride 1 + BN + ReLU, no max pool), stages of BasicBlocks, avgpool, Linear head ``fc``.

    Stages are ``layer1``, ``layer2``, ...; stage ``i`` has ``blocks[i]`` blocks of ``widths[i]`` channels and
    every stage but the first starts with stride 2. The stem has ``widths[0]`` channels.
    """

    def __init__(self, in_shape: InShape, num_classes: int, widths: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        c = widths[0]
        self.num_stages = len(widths)
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layer = []
            for j in range(n):
                layer.append(BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
        self.add_head(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        return self.head(out)


@register("resnet18", min_size=8, description="CIFAR ResNet-18: BasicBlocks [2,2,2,2], widths 64-512")
def resnet18(in_shape: InShape, num_classes: int) -> nn.Module:
    """CIFAR-stem ResNet-18."""
    return ResNet(in_shape, num_classes, (64, 128, 256, 512), (2, 2, 2, 2))


@register("resnet34", min_size=8, description="CIFAR ResNet-34: BasicBlocks [3,4,6,3], widths 64-512")
def resnet34(in_shape: InShape, num_classes: int) -> nn.Module:
    """CIFAR-stem ResNet-34."""
    return ResNet(in_shape, num_classes, (64, 128, 256, 512), (3, 4, 6, 3))


@register("resnet20", min_size=4, description="He et al. CIFAR ResNet-20: 3 stages x 3 BasicBlocks, 16-32-64")
def resnet20(in_shape: InShape, num_classes: int) -> nn.Module:
    """He et al. (2016) CIFAR ResNet-20 with 1x1 conv+BN shortcuts where the shape changes."""
    return ResNet(in_shape, num_classes, (16, 32, 64), (3, 3, 3))
