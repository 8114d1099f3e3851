"""mmdet's ``CocoDataset`` that checks its annotation file and images first.

Use it in a config as ``type='mbn_backbones.CocoDataset'`` (with
``default_scope='mmdet'`` as usual); every other argument is mmdet's.
"""
import os.path as osp

from mmdet.datasets import CocoDataset as MMDetCocoDataset
from mmengine.fileio import get_local_path

from ..registry import DATASETS
from .checks import check_coco_dict, check_image_file, read_json, report

CHECK_IMAGES = ('header', 'decode', 'exists', False)


@DATASETS.register_module()
class CocoDataset(MMDetCocoDataset):
    """COCO-format detection data, checked when the dataset is built.

    Before mmdet parses ``ann_file``, :func:`~mbn_backbones.datasets.checks.check_coco_dict`
    raises a :class:`~mbn_backbones.datasets.checks.DataError` that lists each
    broken record (boxes of no area or outside the image, unknown image or
    category ids, duplicated ids, class names of the metainfo that the file
    does not have): mmdet itself would skip such boxes silently, or train on
    no class at all. Then every image is checked as ``check_images`` says.

    Args:
        check_images (str | bool): ``'header'`` (default: the file exists,
            is an image, and has the width and height the annotation file
            records), ``'decode'`` (also decodes the pixels: finds truncated
            files; slow on large datasets), ``'exists'``, or False.
    """

    def __init__(self, *args, check_images='header', **kwargs):
        if check_images not in CHECK_IMAGES:
            raise ValueError(f'check_images must be one of {CHECK_IMAGES}, got {check_images!r}')
        self.check_images = check_images
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            check_coco_dict(read_json(local_path), self.ann_file, self.metainfo.get('classes'))
        data_list = super().load_data_list()
        if self.check_images:
            problems = []
            for info in data_list:
                path = info['img_path']
                if self.check_images == 'exists':
                    problem = None if osp.isfile(path) else f'{path}: file not found'
                else:
                    problem = check_image_file(path, (info['width'], info['height']),
                                               decode=self.check_images == 'decode')
                if problem:
                    problems.append(f'image id {info["img_id"]}: {problem}')
            report(f'images of {self.ann_file}', problems)
        return data_list
