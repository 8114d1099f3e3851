"""mmseg's ``CityscapesDataset`` that checks its images and label maps first.

Use it in a config as ``type='mbn_backbones.CityscapesDataset'`` (with
``default_scope='mmseg'``; ``configs/_base_/datasets/cityscapes_512x1024.py``
does); every other argument is mmseg's.
"""
import os.path as osp

from mmseg.datasets import CityscapesDataset as MMSegCityscapesDataset

from ..registry import DATASETS
from .checks import (DataError, check_images, check_segmentation_pairs, describe_empty_folder,
                     log_notes, report)

CHECK_LABELS = ('values', 'exists', False)


@DATASETS.register_module()
class CityscapesDataset(MMSegCityscapesDataset):
    """Cityscapes-format segmentation data, checked when the dataset is built.

    mmseg finds no file (a wrong ``img_suffix`` or folder) without complaint
    and reads label values outside the class range as classes, which the
    cross-entropy either indexes out of range (a device-side assert on GPU)
    or silently trains on. Here a :class:`~mbn_backbones.datasets.checks.DataError`
    lists each problem with its file first.

    Args:
        verify_images (str | bool): ``'header'`` (default: each image exists,
            is an image of at most 8 bits per channel within PIL's pixel
            limit), ``'full'`` (also decodes the pixels: finds truncated
            files), ``'exists'``, or False. Grey, alpha and palette images are
            logged once as converted by the loader.
        check_labels (str | bool): ``'values'`` (default: each label map
            exists, is one channel, has its image's size and holds only class
            indices and ``ignore_index``), ``'exists'`` (label files exist),
            or False.
    """

    def __init__(self, *args, verify_images='header', check_labels='values', **kwargs):
        check_images([], verify_images, '')  # refuses an unknown value before any work
        if check_labels not in CHECK_LABELS:
            raise ValueError(f'check_labels must be one of {CHECK_LABELS}, got {check_labels!r}')
        self.verify_images = verify_images
        self.check_labels = check_labels
        self.image_notes = []
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        img_dir = self.data_prefix.get('img_path', '')
        if not (self.ann_file and osp.isfile(self.ann_file)) and not osp.isdir(img_dir):
            raise DataError(describe_empty_folder(img_dir, self.img_suffix))
        data_list = super().load_data_list()
        if not data_list:
            raise DataError(describe_empty_folder(img_dir, self.img_suffix))
        what = f'{type(self).__name__} in {img_dir}'
        self.image_notes = check_images(((d['img_path'], None) for d in data_list),
                                        self.verify_images, what)
        log_notes(self.image_notes, what)
        if not self.check_labels:
            return data_list
        pairs = [(d['img_path'], d['seg_map_path']) for d in data_list if 'seg_map_path' in d]
        if self.check_labels == 'exists':
            missing = [f'{s}: label file not found (image {i})' for i, s in pairs if not osp.isfile(s)]
            report(f'label maps in {self.data_prefix.get("seg_map_path")}', missing)
            return data_list
        # Raw values are checked: with a label_map (a class subset) they are the full set's.
        num_classes = len(self.METAINFO['classes'] if self.label_map else self.metainfo['classes'])
        check_segmentation_pairs(pairs, num_classes, self.ignore_index, self.reduce_zero_label,
                                 what=what)
        return data_list
