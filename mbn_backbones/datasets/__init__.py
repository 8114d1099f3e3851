"""Dataset preparation: synthetic demo datasets and the CamVid converter.

Only numpy and Pillow are needed here, so the dataset tools run before (and
without) mmdet or mmseg being importable.
"""
from .camvid import (CAMVID_CLASSES, CAMVID_TO_CITYSCAPES_TRAIN_ID, CamVidError, ConvertedCamVid,
                     convert_camvid)
from .synthetic import (CITYSCAPES_TRAIN_IDS, COCO_CLASSES, GeneratedDataset, SyntheticCityscapesSpec,
                        SyntheticCocoSpec, make_synthetic_cityscapes, make_synthetic_coco)

__all__ = [
    'CAMVID_CLASSES', 'CAMVID_TO_CITYSCAPES_TRAIN_ID', 'CITYSCAPES_TRAIN_IDS', 'COCO_CLASSES', 'CamVidError',
    'ConvertedCamVid', 'GeneratedDataset', 'SyntheticCityscapesSpec', 'SyntheticCocoSpec', 'convert_camvid',
    'make_synthetic_cityscapes', 'make_synthetic_coco',
]

# Checks need only numpy and Pillow; the checked datasets subclass mmdet's and
# mmseg's, so they are registered only where those are installed.
import importlib.util as _importlib_util  # noqa: E402

from . import checks  # noqa: E402,F401
from .checks import DataError  # noqa: E402

__all__ += ['DataError', 'checks']
if _importlib_util.find_spec('mmdet') is not None:
    from .coco import CocoDataset  # noqa: E402,F401
    __all__ += ['CocoDataset']
if _importlib_util.find_spec('mmseg') is not None:
    from .cityscapes import CityscapesDataset  # noqa: E402,F401
    __all__ += ['CityscapesDataset']
