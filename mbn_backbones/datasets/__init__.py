"""Datasets that configs name, with checks of their input; the CamVid converter.

The checks and the converter need only numpy and Pillow, so the dataset tools
run before (and without) mmdet or mmseg being importable.
"""
import importlib.util as _importlib_util

from . import checks  # noqa: F401
from .camvid import CAMVID_CLASSES, CAMVID_TO_CITYSCAPES_TRAIN_ID, CamVidError, ConvertedCamVid, convert_camvid
from .checks import DataError

__all__ = ['CAMVID_CLASSES', 'CAMVID_TO_CITYSCAPES_TRAIN_ID', 'CamVidError', 'ConvertedCamVid', 'DataError',
           'checks', 'convert_camvid']

# The checked datasets subclass mmdet's and mmseg's, so they are registered
# only where those are installed.
if _importlib_util.find_spec('mmdet') is not None:
    from .coco import CocoDataset  # noqa: F401
    __all__ += ['CocoDataset']
if _importlib_util.find_spec('mmseg') is not None:
    from .cityscapes import CityscapesDataset  # noqa: F401
    __all__ += ['CityscapesDataset']
