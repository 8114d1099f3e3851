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
import logging
import numbers
import os
import os.path as osp
import warnings
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


# What mmcv's LoadImageFromFile (color_type='color', the configs' default)
# does with images that are not 8-bit RGB: it makes them 3-channel 8-bit.
# That is harmless for grey, alpha and palette images, said once in the log;
# more than 8 bits per channel is refused: the loader divides by 256, so a
# 12-bit camera frame stored in 16 bits comes out nearly black.
CONVERTED_MODES = {
    '1': 'grey', 'L': 'grey', 'LA': 'alpha', 'PA': 'alpha', 'RGBA': 'alpha', 'RGBa': 'alpha',
    'La': 'alpha', 'P': 'palette', 'CMYK': 'CMYK',
}
CONVERSIONS = {
    'grey': ('grey images (one channel)', 'the loader repeats the channel 3 times'),
    'alpha': ('images with an alpha channel', 'the loader drops it and keeps the colour under '
                                              'transparent pixels as it is'),
    'palette': ('palette images', 'the loader looks up the colours'),
    'CMYK': ('CMYK images', 'the loader converts them to RGB'),
}
VERIFY_IMAGES = ('header', 'full', 'exists', False)


def _more_than_8_bits(im: Image.Image) -> bool:
    if im.mode.startswith(('I', 'F')):  # I;16, I;16B, I (32-bit int), F (float)
        return True
    # A 48/64-bit PNG or TIFF opens as RGB/RGBA; its raw mode tells the depth.
    return any(';16' in str(getattr(tile, 'args', tile[3] if len(tile) > 3 else ''))
               for tile in (im.tile or ()))


def check_image_file(path: str, expected_size: Optional[tuple] = None, decode: bool = False,
                     conversions: Optional[dict] = None) -> Optional[str]:
    """A problem with the image at ``path``, or None.

    Problems: missing, empty, unreadable, of another size than
    ``expected_size`` (width, height), over PIL's pixel limit (a
    decompression bomb), more than 8 bits per channel. Reads the header
    only, unless ``decode`` (then a truncated file is found too). Grey,
    alpha, palette and CMYK images are fine (the loader converts them); with
    ``conversions``, their paths are added to ``conversions[kind]`` (kinds of
    :data:`CONVERSIONS`) so that the caller can say so.
    """
    if not osp.isfile(path):
        return f'{path}: file not found'
    if osp.getsize(path) == 0:
        return f'{path}: empty file (0 bytes)'
    try:
        with warnings.catch_warnings():
            # Between one and two times the limit PIL only warns; refused below.
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size, mode, deep = im.size, im.mode, _more_than_8_bits(im)
                limit = Image.MAX_IMAGE_PIXELS
                if limit and size[0] * size[1] > limit:
                    return (f'{path}: {size[0]}x{size[1]} pixels is over PIL\'s limit of {limit} '
                            f'(PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); '
                            f'if you trust the file, raise that limit')
                if decode and not deep:  # a truncated file fails only when its pixels are decoded
                    im.load()
    except Image.DecompressionBombError as e:
        return f'{path}: refused as a decompression bomb ({e}); if you trust the file, raise ' \
               f'PIL.Image.MAX_IMAGE_PIXELS'
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f'{path}: not a readable image ({e})'
    if deep:
        return (f'{path}: more than 8 bits per channel (mode {mode}); the loader would divide by '
                f'256 (a 12-bit frame comes out nearly black): convert it to 8 bits yourself')
    if expected_size is not None and tuple(size) != tuple(expected_size):
        return (f'{path}: image is {size[0]}x{size[1]}, the annotation file says '
                f'{expected_size[0]}x{expected_size[1]}')
    if conversions is not None and mode in CONVERTED_MODES:
        conversions.setdefault(CONVERTED_MODES[mode], []).append(path)
    return None


def conversion_notes(conversions: dict) -> list:
    """One line per kind of :data:`CONVERSIONS` found by :func:`check_image_file`."""
    return [f'{CONVERSIONS[kind][0]} ({len(paths)}, e.g. {", ".join(paths[:3])}): '
            f'{CONVERSIONS[kind][1]}' for kind, paths in sorted(conversions.items())]


def check_images(paths_and_sizes: Iterable[tuple], verify: str, what: str,
                 labels: Optional[Iterable] = None) -> list:
    """Check images as ``verify`` (one of :data:`VERIFY_IMAGES`) says.

    ``paths_and_sizes`` holds (path, (width, height) or None); ``labels``
    (e.g. ``'image id 3'``), when given, starts each problem's line.

    Returns:
        list: the notes of :func:`conversion_notes`, for the log.

    Raises:
        DataError: listing the problems.
    """
    if verify not in VERIFY_IMAGES:
        raise ValueError(f'verify_images must be one of {VERIFY_IMAGES}, got {verify!r}')
    if not verify:
        return []
    items = list(paths_and_sizes)
    labels = list(labels) if labels is not None else [None] * len(items)
    problems, conversions = [], {}
    for (path, size), label in zip(items, labels):
        if verify == 'exists':
            problem = None if osp.isfile(path) else f'{path}: file not found'
        else:
            problem = check_image_file(path, size, verify == 'full', conversions)
        if problem:
            problems.append(f'{label}: {problem}' if label else problem)
    report(what, problems)
    return conversion_notes(conversions)


def check_coco_images(images: dict, img_dir: str, ann_file: str, verify: str = 'header') -> list:
    """Every image of ``images`` (from :func:`check_coco_dict`) exists and has its recorded size.

    Returns the notes of :func:`check_images`.
    """
    records = list(images.values())
    return check_images(((osp.join(img_dir, img['file_name']), (img.get('width'), img.get('height')))
                         for img in records), verify, f'images of {ann_file} in {img_dir}',
                        [f'image id {img["id"]}' for img in records])


def check_coco(ann_file: str, img_dir: Optional[str] = None,
               classes: Optional[Iterable[str]] = None, verify: str = 'header') -> list:
    """:func:`read_json`, :func:`check_coco_dict` and, with ``img_dir``, :func:`check_coco_images`."""
    images = check_coco_dict(read_json(ann_file), ann_file, classes)
    return check_coco_images(images, img_dir, ann_file, verify) if img_dir is not None else []


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
                             reduce_zero_label: bool = False, what: str = 'dataset') -> None:
    """Check the label maps of (image path, label path) pairs: readable, one channel, of
    their image's size, values in range. The images are :func:`check_images`' job."""
    problems = []
    for img_path, seg_path in pairs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', Image.DecompressionBombWarning)
                with Image.open(img_path) as im:
                    size = im.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            problems.append(f'{img_path}: not a readable image ({e})')
            continue
        problem = label_values_problem(seg_path, num_classes, ignore_index, reduce_zero_label, size)
        if problem:
            problems.append(problem)
    report(what, problems)


def log_notes(notes: Sequence[str], what: str) -> None:
    """Say in mmengine's log (a warning, once per kind) which images the loader will convert."""
    if notes:
        from mmengine.logging import print_log
        print_log(f'{what}: ' + '; '.join(notes), logger='current', level=logging.WARNING)


def describe_empty_folder(folder: str, suffix: str) -> str:
    """Why no sample was found: the folder is missing, empty, or holds other suffixes."""
    if not osp.isdir(folder):
        return f'image folder {folder} does not exist'
    names = sorted(n for _, _, files in os.walk(folder) for n in files)
    if not names:
        return f'image folder {folder} is empty'
    return (f'no file in {folder} ends with {suffix!r} (found e.g. {", ".join(names[:3])}); '
            f'set img_suffix to match')
