"""mmdet's ``CocoDataset`` that checks its annotation file and images first.

Use it in a config as ``type='mbn_backbones.CocoDataset'`` (with
``default_scope='mmdet'`` as usual; ``configs/_base_/datasets/coco_detection.py``
does); every other argument is mmdet's.
"""
from mmdet.datasets import CocoDataset as MMDetCocoDataset
from mmengine.fileio import get_local_path

from ..registry import DATASETS
from .checks import DataError, check_coco_dict, check_images, log_notes, read_json


@DATASETS.register_module()
class CocoDataset(MMDetCocoDataset):
    """COCO-format detection data, checked when the dataset is built.

    Before mmdet parses ``ann_file``, :func:`~mbn_backbones.datasets.checks.check_coco_dict`
    raises a :class:`~mbn_backbones.datasets.checks.DataError` that lists each
    broken record (boxes of no area, NaN or outside the image, unknown image
    or category ids, duplicated ids, class names of the metainfo that the
    file does not have): mmdet itself would skip such boxes silently, or
    train on no class at all. Then every image is checked as
    ``verify_images`` says, and a dataset left with no image (an annotation
    file without images, or one whose images ``filter_cfg`` all removes) is
    refused: an iteration-based run would wait for its first batch forever.

    Args:
        verify_images (str | bool): ``'header'`` (default: the file exists,
            is an image of at most 8 bits per channel, within PIL's pixel
            limit, of the width and height the annotation file records),
            ``'full'`` (also decodes the pixels: finds truncated files; slow
            on large datasets), ``'exists'``, or False. Grey, alpha and
            palette images are logged once as converted by the loader.
    """

    def __init__(self, *args, verify_images='header', **kwargs):
        check_images([], verify_images, '')  # refuses an unknown value before any work
        self.verify_images = verify_images
        self.image_notes = []
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            check_coco_dict(read_json(local_path), self.ann_file, self.metainfo.get('classes'))
        data_list = super().load_data_list()
        self.image_notes = check_images(
            ((info['img_path'], (info['width'], info['height'])) for info in data_list),
            self.verify_images, f'images of {self.ann_file}',
            [f'image id {info["img_id"]}' for info in data_list])
        log_notes(self.image_notes, f'images of {self.ann_file}')
        return data_list

    def filter_data(self):
        kept = super().filter_data()
        if kept:
            return kept
        if not self.data_list:
            raise DataError(f'annotation file {self.ann_file} lists no image: there is nothing '
                            f'to train or test on')
        cfg = self.filter_cfg or {}
        reasons = []
        if cfg.get('filter_empty_gt'):
            no_box = sum(not info['instances'] for info in self.data_list)
            reasons.append(f'{no_box} have no box of the classes (filter_empty_gt=True)')
        if cfg.get('min_size'):
            small = sum(min(info['width'], info['height']) < cfg['min_size'] for info in self.data_list)
            reasons.append(f'{small} are smaller than min_size={cfg["min_size"]}')
        raise DataError(f'annotation file {self.ann_file}: filter_cfg removes all '
                        f'{len(self.data_list)} images ({"; ".join(reasons)}): there is nothing to '
                        f'train on, and an iteration-based run would wait for its first batch forever')
