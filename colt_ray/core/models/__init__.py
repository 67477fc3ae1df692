"""The model zoo: a registry of CNNs for ticket search, seeded construction, heads and parameter groups.

``build_model(arch, in_shape, num_classes, seed)`` makes any registered architecture for a dataset's
``(C, H, W)`` input; ``param_groups``/``prunable_names`` say which parameters pruning may touch.
Architectures: lenet300, conv2, conv3, conv4, conv6, vgg16, vgg19, resnet18, resnet20, resnet34, mobilenetv2.
"""

from colt_ray.core.models import convnets, lenet, mobilenet, resnet, vgg  # noqa: F401  (register the archs)
from colt_ray.core.models.base import MODELS, ModelSpec, build_model, check_fits, head_module, replace_head
from colt_ray.core.models.groups import GROUPS, layer_weight_count, param_groups, prunable_names
from colt_ray.core.models.resnet import BasicBlock

__all__ = [
    "MODELS",
    "ModelSpec",
    "GROUPS",
    "BasicBlock",
    "build_model",
    "check_fits",
    "head_module",
    "replace_head",
    "layer_weight_count",
    "param_groups",
    "prunable_names",
]
