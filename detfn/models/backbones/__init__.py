"""Backbones: ResNet and MobileNetV2 with torchvision state-dict names.

Importing this package registers ``ResNetConfig`` and ``MobileNetV2Config``.
"""

from detfn.models.backbones.mobilenet_v2 import MobileNetV2, MobileNetV2Config
from detfn.models.backbones.norm import NormKind, make_norm
from detfn.models.backbones.pretrained import LoadReport, load_pretrained, read_state_dict
from detfn.models.backbones.resnet import ResNet, ResNetConfig

__all__ = [
    "LoadReport",
    "MobileNetV2",
    "MobileNetV2Config",
    "NormKind",
    "ResNet",
    "ResNetConfig",
    "load_pretrained",
    "make_norm",
    "read_state_dict",
]
