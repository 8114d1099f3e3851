"""Checks of detection and segmentation data, run before training starts.

mmdet's ``CocoDataset`` silently drops boxes with no area, boxes outside
the image and annotations of unknown categories, and builds an empty class
list from a misspelt class name; a missing or corrupt image fails only when
the data loader reaches it, possibly hours into training. mmseg reads label
values outside the class range as real classes (or crashes inside the loss
on GPU). The functions here look at everything once and raise
:class:`DataError` listing every problem with the file it is in, so that the
user can fix the data and nothing is trained on what was not meant.

Only ``json``, numpy and Pillow are used: the checks run without mmdet or
mmseg. :mod:`mbn_backbones.datasets.coco` and
:mod:`mbn_backbones.datasets.cityscapes` call them from the datasets.
"""
import difflib
import json
import numbers
import os
import os.path as osp
from typing import Iterable, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

# Rounding in COCO's own annotations puts some boxes a fraction of a pixel
# past the border; more than this is an error in the data.
BOX_TOLERANCE = 1.0
SHOWN = 10


class DataError(ValueError):
    """Data that cannot be trained on as it is; the message lists each problem and its file."""


def report(what: str, problems: Sequence[str]) -> None:
    if not problems:
        return
    shown = '\n  '.join(problems[:SHOWN])
    more = f'\n  ... and {len(problems) - SHOWN} more' if len(problems) > SHOWN else ''
    raise DataError(f'{what}: {len(problems)} problem{"s" if len(problems) > 1 else ""}:\n  '
                    f'{shown}{more}')


def read_json(path: str) -> object:
    """Parse a JSON file, naming the file (and line and column) in every error."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file not found: {path}')
    if osp.getsize(path) == 0:
        raise DataError(f'annotation file {path} is empty (0 bytes)')
    with open(path, encoding='utf-8') as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f'annotation file {path} is not valid JSON: {e.msg} at line '
                            f'{e.lineno} column {e.colno}') from e
        except UnicodeDecodeError as e:
            raise DataError(f'annotation file {path} is not UTF-8 text: {e}') from e


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def check_coco_dict(data, ann_file: str, classes: Optional[Iterable[str]] = None) -> dict:
    """Check a parsed COCO detection annotation file.

    Checks the top-level layout, unique ids, every image record (id,
    file_name, positive width and height), every annotation (known image and
    category, bbox of four finite numbers with positive width and height,
    inside the image) and that each of ``classes`` is a category name.

    Returns:
        dict: image id → image record, for :func:`check_coco_images`.

    Raises:
        DataError: listing the problems, each with its annotation or image id.
    """
    if not isinstance(data, dict):
        raise DataError(f'annotation file {ann_file} holds a JSON {type(data).__name__}; a COCO '
                        f'file holds an object with "images", "annotations" and "categories"')
    missing = [k for k in ('images', 'annotations', 'categories') if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f'annotation file {ann_file} has no list {", ".join(map(repr, missing))} '
                        f'(top-level keys: {sorted(data)})')
    problems = []

    images = {}
    for i, img in enumerate(data['images']):
        where = f'images[{i}]'
        if not isinstance(img, dict) or 'id' not in img:
            problems.append(f'{where} has no "id"')
            continue
        where = f'image id {img["id"]}'
        if img['id'] in images:
            problems.append(f'{where} appears twice in "images"')
        if not isinstance(img.get('file_name'), str) or not img['file_name']:
            problems.append(f'{where} has no "file_name"')
        for key in ('width', 'height'):
            if not _number(img.get(key)) or img[key] <= 0:
                problems.append(f'{where} ({img.get("file_name")}): {key} must be a positive '
                                f'number, got {img.get(key)!r}')
        images[img['id']] = img

    categories = {}
    for i, cat in enumerate(data['categories']):
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            problems.append(f'categories[{i}] needs "id" and "name", got {cat!r}')
            continue
        if cat['id'] in categories:
            problems.append(f'category id {cat["id"]} appears twice in "categories"')
        categories[cat['id']] = cat['name']

    if classes is not None:
        names = list(categories.values())
        for name in classes:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ''
                problems.append(f'class {name!r} of the config\'s metainfo is not a category of '
                                f'the file{hint} (categories: {", ".join(names[:20])}'
                                f'{" ..." if len(names) > 20 else ""})')

    ann_ids = set()
    for i, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict):
            problems.append(f'annotations[{i}] is a {type(ann).__name__}, not an object')
            continue
        where = f'annotation id {ann.get("id", f"? (annotations[{i}])")}'
        if 'id' in ann:
            if ann['id'] in ann_ids:
                problems.append(f'{where} appears twice in "annotations"')
            ann_ids.add(ann['id'])
        img = images.get(ann.get('image_id'))
        if img is None:
            problems.append(f'{where}: image_id {ann.get("image_id")!r} is not in "images"')
        else:
            where += f' (image {img.get("file_name")})'
        if ann.get('category_id') not in categories:
            problems.append(f'{where}: category_id {ann.get("category_id")!r} is not in '
                            f'"categories" (ids: {sorted(categories)[:20]})')
        box = ann.get('bbox')
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(map(_number, box)):
            problems.append(f'{where}: bbox must be [x, y, width, height] of four finite '
                            f'numbers, got {box!r}')
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            problems.append(f'{where}: bbox {box} has non-positive size (width {w}, height {h})')
            continue
        if img is not None and _number(img.get('width')) and _number(img.get('height')):
            W, H = img['width'], img['height']
            if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > W + BOX_TOLERANCE or \
                    y + h > H + BOX_TOLERANCE:
                problems.append(f'{where}: bbox {box} (x1, y1, x2, y2 = {x}, {y}, {x + w}, {y + h}) '
                                f'lies outside the {W}x{H} image')
    report(f'annotation file {ann_file}', problems)
    return images


def check_image_file(path: str, expected_size: Optional[tuple] = None,
                     decode: bool = False) -> Optional[str]:
    """A problem with the image at ``path`` (missing, unreadable, other size), or None.

    Reads the header only, unless ``decode`` (then a truncated file is found
    too); ``expected_size`` is (width, height).
    """
    if not osp.isfile(path):
        return f'{path}: file not found'
    if osp.getsize(path) == 0:
        return f'{path}: empty file (0 bytes)'
    try:
        with Image.open(path) as im:
            size = im.size
            if decode:  # a truncated file fails only when its pixels are decoded
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f'{path}: not a readable image ({e})'
    if expected_size is not None and tuple(size) != tuple(expected_size):
        return (f'{path}: image is {size[0]}x{size[1]}, the annotation file says '
                f'{expected_size[0]}x{expected_size[1]}')
    return None


def check_coco_images(images: dict, img_dir: str, ann_file: str, decode: bool = False) -> None:
    """Every image of ``images`` (from :func:`check_coco_dict`) exists and has its recorded size."""
    problems = []
    for img in images.values():
        problem = check_image_file(osp.join(img_dir, img['file_name']),
                                   (img.get('width'), img.get('height')), decode)
        if problem:
            problems.append(f'image id {img["id"]}: {problem}')
    report(f'images of {ann_file} in {img_dir}', problems)


def check_coco(ann_file: str, img_dir: Optional[str] = None,
               classes: Optional[Iterable[str]] = None) -> None:
    """:func:`read_json`, :func:`check_coco_dict` and, with ``img_dir``, :func:`check_coco_images`."""
    images = check_coco_dict(read_json(ann_file), ann_file, classes)
    if img_dir is not None:
        check_coco_images(images, img_dir, ann_file)


def label_values_problem(path: str, num_classes: int, ignore_index: int = 255,
                         reduce_zero_label: bool = False,
                         image_size: Optional[tuple] = None) -> Optional[str]:
    """A problem with the label map at ``path``, or None.

    A label map is a single-channel PNG whose pixels are class indices in
    ``[0, num_classes)`` or ``ignore_index`` (with ``reduce_zero_label``, raw
    values ``0..num_classes``, 0 being ignored). ``image_size`` is the
    (width, height) of its image.
    """
    if not osp.isfile(path):
        return f'{path}: label file not found'
    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
            if mode not in ('L', 'P', 'I', 'I;16'):
                return (f'{path}: label map has mode {mode} ({len(im.getbands())} channels); it '
                        f'must be one channel of class indices (a colour-coded label needs '
                        f'converting, e.g. with tools/dataset_converters/camvid.py)')
            values = np.unique(np.asarray(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f'{path}: not a readable image ({e})'
    if image_size is not None and tuple(size) != tuple(image_size):
        return f'{path}: label map is {size[0]}x{size[1]}, its image is {image_size[0]}x{image_size[1]}'
    top = num_classes if reduce_zero_label else num_classes - 1
    bad = [int(v) for v in values if v != ignore_index and not 0 <= v <= top]
    if bad:
        return (f'{path}: label values {bad[:10]}{" ..." if len(bad) > 10 else ""} are outside '
                f'the classes 0..{top} and ignore_index {ignore_index}')
    return None


def check_segmentation_pairs(pairs: Sequence[tuple], num_classes: int, ignore_index: int = 255,
                             reduce_zero_label: bool = False, what: str = 'dataset',
                             decode: bool = False) -> None:
    """Check (image path, label path) pairs: both readable, same size, labels in range."""
    problems = []
    for img_path, seg_path in pairs:
        problem = check_image_file(img_path, decode=decode)
        if problem:
            problems.append(problem)
            continue
        with Image.open(img_path) as im:
            size = im.size
        problem = label_values_problem(seg_path, num_classes, ignore_index, reduce_zero_label, size)
        if problem:
            problems.append(problem)
    report(what, problems)


def describe_empty_folder(folder: str, suffix: str) -> str:
    """Why no sample was found: the folder is missing, empty, or holds other suffixes."""
    if not osp.isdir(folder):
        return f'image folder {folder} does not exist'
    names = sorted(n for _, _, files in os.walk(folder) for n in files)
    if not names:
        return f'image folder {folder} is empty'
    return (f'no file in {folder} ends with {suffix!r} (found e.g. {", ".join(names[:3])}); '
            f'set img_suffix to match')
