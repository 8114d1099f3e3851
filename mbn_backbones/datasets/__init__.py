"""Datasets that configs name, with checks of their input.

The checks need only numpy and Pillow; the checked datasets subclass mmdet's
and mmseg's, so they are registered only where those are installed.
"""
import importlib.util as _importlib_util

from . import checks  # noqa: F401
from .checks import DataError

__all__ = ['DataError', 'checks']
if _importlib_util.find_spec('mmdet') is not None:
    from .coco import CocoDataset  # noqa: F401
    __all__ += ['CocoDataset']
if _importlib_util.find_spec('mmseg') is not None:
    from .cityscapes import CityscapesDataset  # noqa: F401
    __all__ += ['CityscapesDataset']
