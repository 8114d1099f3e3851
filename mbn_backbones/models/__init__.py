from .arch import ARCHS, Arch, Row
from .backbones import MobileNet, MobileNetV1, MobileNetV2, MobileNetV3
from .classifier import MobileNetClassifier
from .heads import DefaultBoxGenerator, SSDHead, SSDLiteAnchorGenerator, SSDLiteHead
from .heads import LRASPPHead
from .layers import (ConvNormAct, DepthwiseSeparable, InvertedResidual, SqueezeExcite,
                     fuse_conv_bn, make_divisible)
from .necks import SSDLiteNeck

__all__ = [
    'ARCHS', 'Arch', 'Row', 'MobileNet', 'MobileNetV1', 'MobileNetV2', 'MobileNetV3',
    'MobileNetClassifier', 'ConvNormAct', 'DepthwiseSeparable', 'InvertedResidual',
    'SqueezeExcite', 'fuse_conv_bn', 'make_divisible',
    'DefaultBoxGenerator', 'SSDHead', 'SSDLiteAnchorGenerator', 'SSDLiteHead', 'SSDLiteNeck',
    'LRASPPHead',
]
