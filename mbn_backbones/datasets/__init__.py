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
