"""MobileNet V1/V2/V3 backbones, SSDLite and LR-ASPP heads for OpenMMLab.

Importing the package registers its modules in the ``mbn_backbones`` scope
and changes nothing else: mmdet, mmseg, mmengine and torch stay as they are.
A config needs only
``custom_imports=dict(imports=['mbn_backbones'], allow_failed_imports=False)``;
the fixes for upstream defects are components it names
(``runner_type='mbn_backbones.Runner'``, ``type='mbn_backbones.SSDHead'``,
see ``docs/architecture.md``).
"""
from . import engine, models, registry  # noqa: F401
