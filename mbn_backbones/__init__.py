"""MobileNet V1/V2/V3 backbones, SSDLite and LR-ASPP heads for OpenMMLab.

Importing the package registers its modules in the ``mbn_backbones`` scope
and applies the upstream workarounds of :mod:`mbn_backbones.compat`, so a
config needs only
``custom_imports=dict(imports=['mbn_backbones'], allow_failed_imports=False)``.
"""
from . import compat, registry  # noqa: F401

compat.apply()

from . import engine, models  # noqa: E402,F401
