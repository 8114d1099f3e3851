"""The demo's datasets, painted: shapes in COCO format, street scenes in the Cityscapes layout.

``make demo`` calls these itself; to write a dataset for ``tools/train.py`` on
the ``*_synthetic.py`` configs, run::

    .venv/bin/python tools/demo/synthetic_data.py coco --out data/synthetic_coco
    .venv/bin/python tools/demo/synthetic_data.py cityscapes --out data/synthetic_cityscapes

* ``coco``: coloured shapes (:data:`COCO_CLASSES`) on textured backgrounds,
  ``<out>/{train,val}2017/*.jpg`` and ``<out>/annotations/instances_{train,val}2017.json``.
* ``cityscapes``: street scenes labelled with Cityscapes trainIds
  (:data:`CITYSCAPES_TRAIN_IDS`, 255 on some class borders),
  ``<out>/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and
  ``<out>/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png``.

Both are meant to be learnt on a CPU in minutes, so every class has a strong
cue (shape *and* a hue band for the shapes; position, colour and texture for
the street classes) and no object is tiny.

Each image draws from its own random stream, seeded with ``(seed, split,
index)``, so the train and val splits never share an image and a run writes
the same bytes as the last one (for the same numpy and Pillow versions). The
arguments are kept in ``<out>/mbn_synthetic.json``: a second call with the same
arguments does nothing, one with other arguments refuses unless ``overwrite``.
"""
from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

Progress = Callable[..., Iterable]

MANIFEST_NAME = 'mbn_synthetic.json'

COCO_CLASSES = ('circle', 'square', 'triangle', 'cross')
# Centre hue (degrees) of each class: a second cue besides the outline, which
# lets a detector trained from scratch on a CPU converge in minutes.
_COCO_CLASS_HUES = {'circle': 0.0, 'square': 215.0, 'triangle': 120.0, 'cross': 55.0}
_COCO_HUE_JITTER = 18.0
_COCO_MAX_OBJECTS = 4
# Side of an object's square extent, as a fraction of the shorter image side.
_COCO_SIZE_RANGE = (0.15, 0.6)
# One image in this many has no objects (index 0, 25, 50, ... of each split):
# real datasets have such images, and index 0 makes sure even tiny splits do.
_COCO_EMPTY_EVERY = 25
_COCO_JPEG_QUALITY = 90
# At most this share of the smaller of two boxes may be covered by the other.
_COCO_MAX_OVERLAP = 0.1
_COCO_PLACEMENT_TRIES = 50

# Cityscapes trainIds of the classes the street scenes use. The other twelve
# of the 19 trainIds never occur; 255 marks ignored pixels.
CITYSCAPES_TRAIN_IDS = {
    'road': 0,
    'sidewalk': 1,
    'building': 2,
    'vegetation': 8,
    'sky': 10,
    'person': 11,
    'car': 13,
}
IGNORE_INDEX = 255
# Cityscapes' labelling leaves some pixels on object outlines unlabelled;
# this share of class-boundary pixels becomes 255 to mimic it.
_CITYSCAPES_IGNORE_BOUNDARY_SHARE = 0.5
_CITYSCAPES_CITIES = {'train': ('northvale', 'eastport'), 'val': ('southmere',)}

_SPLIT_KEYS = {'train': 0, 'val': 1}


@dataclasses.dataclass(frozen=True)
class SyntheticCocoSpec:
    """Image size, split sizes and seed; all of them go to the manifest."""

    height: int = 320
    width: int = 320
    num_train: int = 200
    num_val: int = 50
    seed: int = 0
    min_side = 1

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            least = self.min_side if name in ('height', 'width') else 0
            if value < least:
                raise ValueError(f'{name} must be >= {least}, got {value}')


@dataclasses.dataclass(frozen=True)
class SyntheticCityscapesSpec(SyntheticCocoSpec):
    height: int = 256
    width: int = 512
    num_train: int = 60
    num_val: int = 20
    min_side = 64  # room for a street, a car and a person


@dataclasses.dataclass(frozen=True)
class GeneratedDataset:
    """What a generator left in ``root``."""

    root: Path
    reused: bool  # True when ``root`` already held this dataset and nothing was written
    num_images: dict[str, int]
    num_objects: dict[str, int] = dataclasses.field(default_factory=dict)


def _no_progress(iterable, **kwargs):
    return iterable


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_KEYS[split], index])


def _hsv(h_deg: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _prepare_output(out: Path, kind: str, spec, owned: Sequence[str],
                    overwrite: bool) -> GeneratedDataset | None:
    """Make ``out`` ready to receive the dataset, or what it holds when that is this dataset already."""
    path = out / MANIFEST_NAME
    args = dataclasses.asdict(spec)
    if path.is_file() and not overwrite:
        old = json.loads(path.read_text())
        # the kind is the generator name's last part, as in manifests written from the package
        old_kind = old.get('generator', '').rsplit('.', 1)[-1]
        if old_kind != kind:
            raise FileExistsError(f'{out} holds a synthetic {old_kind} dataset, not {kind}; pass '
                                  '--overwrite (overwrite=True) to replace it, or choose another folder')
        old_args = old.get('args', {})
        diff = ', '.join(f'{k}: {old_args.get(k)!r} -> {args.get(k)!r}'
                         for k in sorted(set(old_args) | set(args)) if old_args.get(k) != args.get(k))
        if diff:
            raise FileExistsError(f'{out} holds a synthetic dataset made with other arguments ({diff}); '
                                  'pass --overwrite (overwrite=True) to replace it, or choose another folder')
        if all((out / name).exists() for name in owned):
            return GeneratedDataset(out, True, old.get('num_images', {}), old.get('num_objects', {}))
        raise FileExistsError(f'{out} has a manifest but lacks some of {list(owned)}; '
                              'pass --overwrite (overwrite=True) to generate it again')
    if not path.is_file() and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f'{out} is not empty and has no {MANIFEST_NAME} (other files, or an '
                              'interrupted run); pass --overwrite (overwrite=True) to write the dataset '
                              'into it anyway')
    # Only what this generator writes is removed; other files in `out` stay.
    for name in (MANIFEST_NAME, *owned):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


def _finish(out: Path, kind: str, spec, num_images: dict, num_objects: dict) -> GeneratedDataset:
    # Written last: a manifest means the run finished.
    record = {'generator': f'synthetic_data.{kind}', 'format': 1, 'args': dataclasses.asdict(spec),
              'num_images': num_images, 'num_objects': num_objects}
    (out / MANIFEST_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + '\n')
    return GeneratedDataset(out, False, num_images, num_objects)


# ---------------------------------------------------------------------------
# Shapes (COCO)
# ---------------------------------------------------------------------------

def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _shape_polygon(name: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """Outline of a shape centred on the origin, about ``size`` pixels across."""
    r = size / 2
    if name == 'circle':
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        aspect = rng.uniform(0.85, 1.0)  # slightly elliptic circles add variety
        pts = np.stack([r * np.cos(t), r * aspect * np.sin(t)], axis=1)
        return _rotate(pts, rng.uniform(0, math.pi))
    if name == 'square':
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
        return _rotate(pts, math.radians(rng.uniform(-15, 15)))
    if name == 'triangle':
        t = math.radians(-90) + np.arange(3) * 2 * math.pi / 3
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        return _rotate(pts, math.radians(rng.uniform(-25, 25)))
    if name == 'cross':
        a = r * rng.uniform(0.3, 0.4)  # half-width of an arm
        pts = np.array([[-a, -r], [a, -r], [a, -a], [r, -a], [r, a], [a, a],
                        [a, r], [-a, r], [-a, a], [-r, a], [-r, -a], [-a, -a]])
        return _rotate(pts, math.radians(rng.uniform(-15, 15)))
    raise ValueError(f'unknown shape {name!r}, expected one of {COCO_CLASSES}')


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection of two xyxy boxes over the area of the smaller one."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _textured_background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """Muted two-colour gradient, soft blotches and clutter lines."""
    c0 = np.array(_hsv(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.25, 0.85)), float)
    c1 = np.array(_hsv(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.25, 0.85)), float)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img *= _low_frequency_field(rng, h, w, (4, 4), 0.15)[..., None]
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):
        colour = _hsv(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.1, 0.95))
        x0, x1 = rng.uniform(-0.2, 1.2, 2) * w
        y0, y1 = rng.uniform(-0.2, 1.2, 2) * h
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 4)))
    return canvas


def _low_frequency_field(rng: np.random.Generator, h: int, w: int, grid: tuple[int, int],
                         amplitude: float) -> np.ndarray:
    """Smooth multiplicative field around 1 (uneven lighting)."""
    coarse = 1 + rng.uniform(-amplitude, amplitude, grid)
    field = Image.fromarray(coarse.astype(np.float32)).resize((w, h), Image.BILINEAR)
    return np.asarray(field, dtype=np.float64)


def _add_noise(rng: np.random.Generator, img: Image.Image, sigma_range: tuple[float, float]) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float64)
    arr = arr + rng.normal(0, rng.uniform(*sigma_range), arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _coco_image(rng: np.random.Generator, spec: SyntheticCocoSpec, empty: bool):
    h, w = spec.height, spec.width
    canvas = _textured_background(rng, h, w)
    draw = ImageDraw.Draw(canvas)
    objects = []
    num = 0 if empty else int(rng.integers(1, _COCO_MAX_OBJECTS + 1))
    side = min(h, w)
    for _ in range(num):
        cls = COCO_CLASSES[int(rng.integers(len(COCO_CLASSES)))]
        for _ in range(_COCO_PLACEMENT_TRIES):
            pts = _shape_polygon(cls, rng.uniform(*_COCO_SIZE_RANGE) * side, rng)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            if hi[0] - lo[0] >= w or hi[1] - lo[1] >= h:
                continue
            centre = np.array([rng.uniform(-lo[0], w - hi[0]), rng.uniform(-lo[1], h - hi[1])])
            pts = pts + centre
            box = (*pts.min(axis=0), *pts.max(axis=0))
            if all(_overlap(box, o['box']) <= _COCO_MAX_OVERLAP for o in objects):
                break
        else:
            continue  # no room left for this object
        hue = _COCO_CLASS_HUES[cls] + rng.uniform(-_COCO_HUE_JITTER, _COCO_HUE_JITTER)
        colour = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
        draw.polygon([tuple(p) for p in pts], fill=colour)
        objects.append({'category': cls, 'polygon': pts, 'box': box})
    return _add_noise(rng, canvas, (3.0, 10.0)), objects


def _coco_annotation(obj: dict, ann_id: int, image_id: int) -> dict:
    x0, y0, x1, y1 = obj['box']
    return {
        'id': ann_id,
        'image_id': image_id,
        'category_id': COCO_CLASSES.index(obj['category']) + 1,
        'bbox': [round(float(x0), 2), round(float(y0), 2),
                 round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        'area': round(_polygon_area(obj['polygon']), 2),
        'segmentation': [[round(float(v), 2) for v in obj['polygon'].reshape(-1)]],
        'iscrowd': 0,
    }



def make_synthetic_coco(out: str | Path, spec: SyntheticCocoSpec = SyntheticCocoSpec(), *,
                        overwrite: bool = False, progress: Progress = _no_progress) -> GeneratedDataset:
    """Write the shapes detection dataset to ``out`` (see the module docstring).

    Args:
        out: Output folder; created if needed.
        spec: Sizes, counts and seed.
        overwrite: Replace a dataset made with other arguments, or write into
            a non-empty folder that has no manifest.
        progress: Wraps the per-image loop, called as
            ``progress(iterable, total=..., desc=...)`` (``tqdm`` fits).
    """
    out = Path(out)
    reused = _prepare_output(out, 'coco', spec, ('train2017', 'val2017', 'annotations'), overwrite)
    if reused:
        return reused
    (out / 'annotations').mkdir()
    categories = [{'id': i + 1, 'name': name, 'supercategory': 'shape'}
                  for i, name in enumerate(COCO_CLASSES)]
    num_images, num_objects = {}, {}
    for split, count in (('train', spec.num_train), ('val', spec.num_val)):
        image_dir = out / f'{split}2017'
        image_dir.mkdir()
        images, annotations = [], []
        for index in progress(range(count), total=count, desc=f'coco {split}'):
            pixels, objects = _coco_image(_image_rng(spec.seed, split, index), spec,
                                          empty=index % _COCO_EMPTY_EVERY == 0)
            image_id = index + 1
            file_name = f'{image_id:06d}.jpg'
            Image.fromarray(pixels).save(image_dir / file_name, quality=_COCO_JPEG_QUALITY)
            images.append({'id': image_id, 'file_name': file_name, 'height': spec.height,
                           'width': spec.width})
            for obj in objects:
                annotations.append(_coco_annotation(obj, len(annotations) + 1, image_id))
        coco = {
            'info': {'description': 'mbn_backbones synthetic shapes', 'version': '1'},
            'licenses': [],
            'images': images,
            'annotations': annotations,
            'categories': categories,
        }
        (out / 'annotations' / f'instances_{split}2017.json').write_text(
            json.dumps(coco, separators=(',', ':')))
        num_images[split], num_objects[split] = len(images), len(annotations)
    return _finish(out, 'coco', spec, num_images, num_objects)


# ---------------------------------------------------------------------------
# Street scenes (Cityscapes)
# ---------------------------------------------------------------------------

class _Scene:
    """An RGB canvas and its trainId map, painted together back to front."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.image = Image.new('RGB', (w, h))
        self.label = Image.new('L', (w, h), CITYSCAPES_TRAIN_IDS['sky'])
        self.draw = ImageDraw.Draw(self.image)
        self.draw_label = ImageDraw.Draw(self.label)

    def _paint(self, shape: str, xy, colour, cls: str | None):
        getattr(self.draw, shape)(xy, fill=colour)
        if cls is not None:
            getattr(self.draw_label, shape)(xy, fill=CITYSCAPES_TRAIN_IDS[cls])

    def polygon(self, pts, colour, cls: str | None):
        self._paint('polygon', [tuple(map(float, p)) for p in pts], colour, cls)

    def rectangle(self, box, colour, cls: str | None):
        self._paint('rectangle', [float(v) for v in box], colour, cls)

    def ellipse(self, box, colour, cls: str | None):
        self._paint('ellipse', [float(v) for v in box], colour, cls)


def _paint_sky(rng, scene: _Scene, horizon: int):
    h, w = scene.h, scene.w
    if rng.random() < 0.3:  # overcast
        top = np.array(_hsv(rng.uniform(190, 230), rng.uniform(0.0, 0.1), rng.uniform(0.6, 0.85)), float)
    else:
        top = np.array(_hsv(rng.uniform(195, 225), rng.uniform(0.35, 0.7), rng.uniform(0.7, 0.95)), float)
    bottom = top + (255 - top) * rng.uniform(0.3, 0.6)
    t = np.linspace(0, 1, max(horizon, 1))[:, None, None]
    band = (top * (1 - t) + bottom * t) * np.ones((1, w, 1))
    scene.image.paste(Image.fromarray(np.clip(band, 0, 255).astype(np.uint8)), (0, 0))
    for _ in range(int(rng.integers(0, 4))):  # clouds stay labelled sky
        cx, cy = rng.uniform(0, w), rng.uniform(0, 0.3 * h)
        rx, ry = rng.uniform(0.05, 0.15) * w, rng.uniform(0.02, 0.05) * h
        grey = int(rng.uniform(215, 250))
        scene.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), (grey, grey, grey), None)


def _paint_buildings(rng, scene: _Scene, horizon: int):
    h, w = scene.h, scene.w
    x = -rng.uniform(0, 0.1) * w
    while x < w:
        bw = rng.uniform(0.1, 0.25) * w
        if rng.random() < 0.15:  # a gap shows the sky down to the horizon
            x += bw * 0.5
            continue
        top = rng.uniform(0.05, 0.3) * h
        colour = _hsv(rng.uniform(0, 45), rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.8))
        scene.rectangle((x, top, x + bw, horizon), colour, 'building')
        win = _hsv(rng.uniform(190, 230), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.45))
        step_x, step_y = rng.uniform(0.025, 0.04) * w, rng.uniform(0.05, 0.08) * h
        wy = top + step_y * 0.5
        while wy + step_y * 0.5 < horizon - 0.03 * h:
            wx = x + step_x * 0.5
            while wx + step_x * 0.5 < x + bw:
                scene.rectangle((wx, wy, wx + step_x * 0.5, wy + step_y * 0.5), win, None)
                wx += step_x
            wy += step_y
        x += bw


def _paint_trees(rng, scene: _Scene, horizon: int):
    h, w = scene.h, scene.w
    for _ in range(int(rng.integers(1, 4))):
        cx = rng.uniform(0.05, 0.95) * w
        crown_y = horizon - rng.uniform(0.1, 0.25) * h
        radius = rng.uniform(0.06, 0.12) * h
        trunk = _hsv(rng.uniform(20, 35), rng.uniform(0.4, 0.7), rng.uniform(0.2, 0.4))
        tw = radius * 0.25
        # Cityscapes labels trunks as vegetation too.
        scene.rectangle((cx - tw, crown_y, cx + tw, horizon + 0.03 * h), trunk, 'vegetation')
        for _ in range(int(rng.integers(10, 20))):
            lx = cx + rng.normal(0, radius * 0.6)
            ly = crown_y + rng.normal(0, radius * 0.45)
            lr = radius * rng.uniform(0.35, 0.6)
            leaf = _hsv(rng.uniform(75, 140), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
            scene.ellipse((lx - lr, ly - lr, lx + lr, ly + lr), leaf, 'vegetation')
    if rng.random() < 0.5:  # a hedge along the building line
        x0 = rng.uniform(0, 0.5) * w
        x1 = x0 + rng.uniform(0.2, 0.5) * w
        top = horizon - rng.uniform(0.03, 0.07) * h
        scene.rectangle((x0, top, x1, horizon), _hsv(rng.uniform(80, 130), 0.6, 0.35), 'vegetation')
        for _ in range(int((x1 - x0) / 6)):
            bx, by = rng.uniform(x0, x1), rng.uniform(top, horizon)
            leaf = _hsv(rng.uniform(75, 140), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
            scene.ellipse((bx - 3, by - 3, bx + 3, by + 3), leaf, 'vegetation')


def _paint_ground(rng, scene: _Scene, horizon: int):
    """Sidewalks to both sides of a road that narrows towards a vanishing point."""
    h, w = scene.h, scene.w
    walk = _hsv(rng.uniform(0, 35), rng.uniform(0.05, 0.3), rng.uniform(0.55, 0.8))
    scene.rectangle((0, horizon, w, h), walk, 'sidewalk')
    # Paving joints get denser towards the horizon.
    joint = tuple(int(c * 0.8) for c in walk)
    y = float(h)
    while y > horizon:
        scene.draw.line([(0, y), (w, y)], fill=joint, width=1)
        y -= max(2.0, (y - horizon) * 0.15)
    vx = rng.uniform(0.35, 0.65) * w
    top_half = rng.uniform(0.04, 0.1) * w
    left_bottom, right_bottom = rng.uniform(-0.3, 0.15) * w, rng.uniform(0.85, 1.3) * w
    road_pts = [(vx - top_half, horizon), (vx + top_half, horizon), (right_bottom, h), (left_bottom, h)]
    road = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.08), rng.uniform(0.22, 0.42))
    scene.polygon(road_pts, road, 'road')
    kerb = tuple(min(255, int(c * 1.25) + 20) for c in walk)
    scene.draw.line([road_pts[0], road_pts[3]], fill=kerb, width=3)
    scene.draw.line([road_pts[1], road_pts[2]], fill=kerb, width=3)
    # Dashed centre line, labelled road.
    centre_bottom = (left_bottom + right_bottom) / 2
    n_dash = 8
    for i in range(0, n_dash, 2):
        t0, t1 = (i / n_dash) ** 1.6, ((i + 1) / n_dash) ** 1.6
        p0 = (vx + (centre_bottom - vx) * t0, horizon + (h - horizon) * t0)
        p1 = (vx + (centre_bottom - vx) * t1, horizon + (h - horizon) * t1)
        scene.draw.line([p0, p1], fill=(235, 235, 225), width=max(1, int(1 + 4 * t1)))

    def road_span(y: float) -> tuple[float, float]:
        t = (y - horizon) / (h - horizon)
        return (vx - top_half + (left_bottom - vx + top_half) * t,
                vx + top_half + (right_bottom - vx - top_half) * t)
    return road_span


def _paint_car(rng, scene: _Scene, x: float, bottom: float, width: float):
    body = _hsv(rng.uniform(0, 360), rng.choice([rng.uniform(0, 0.15), rng.uniform(0.5, 0.9)]),
                rng.uniform(0.2, 0.95))
    dark = (25, 25, 28)
    body_h, cabin_h = width * 0.32, width * 0.22
    wheel_r = width * 0.1
    cabin_top = bottom - wheel_r * 0.6 - body_h - cabin_h
    body_top = cabin_top + cabin_h
    cabin = [(x + width * 0.2, cabin_top), (x + width * 0.78, cabin_top),
             (x + width * 0.9, body_top), (x + width * 0.08, body_top)]
    scene.polygon(cabin, body, 'car')
    glass = _hsv(rng.uniform(190, 220), rng.uniform(0.1, 0.35), rng.uniform(0.2, 0.45))
    inset = width * 0.04
    scene.polygon([(cabin[0][0] + inset, cabin_top + inset), (cabin[1][0] - inset, cabin_top + inset),
                   (cabin[2][0] - inset * 1.5, body_top), (cabin[3][0] + inset * 1.5, body_top)], glass, None)
    scene.rectangle((x, body_top, x + width, bottom - wheel_r * 0.6), body, 'car')
    lamp = (240, 230, 180) if rng.random() < 0.5 else (200, 30, 30)
    scene.rectangle((x + width * 0.02, body_top + body_h * 0.2, x + width * 0.1, body_top + body_h * 0.4),
                    lamp, None)
    for cx in (x + width * 0.2, x + width * 0.8):
        scene.ellipse((cx - wheel_r, bottom - 2 * wheel_r, cx + wheel_r, bottom), dark, 'car')


def _paint_person(rng, scene: _Scene, cx: float, bottom: float, height: float):
    skin = _hsv(rng.uniform(15, 35), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.9))
    shirt = _hsv(rng.uniform(0, 360), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.9))
    trousers = _hsv(rng.uniform(200, 240), rng.uniform(0.0, 0.6), rng.uniform(0.1, 0.5))
    head = height * 0.13
    half = height * 0.12  # half the shoulder width
    leg_top = bottom - height * 0.47
    scene.rectangle((cx - half * 0.8, leg_top, cx - half * 0.1, bottom), trousers, 'person')
    scene.rectangle((cx + half * 0.1, leg_top, cx + half * 0.8, bottom), trousers, 'person')
    torso_top = bottom - height + head
    scene.polygon([(cx - half, torso_top), (cx + half, torso_top),
                   (cx + half * 0.85, leg_top + height * 0.03), (cx - half * 0.85, leg_top + height * 0.03)],
                  shirt, 'person')
    scene.rectangle((cx - half * 1.3, torso_top + height * 0.02, cx - half, leg_top), shirt, 'person')
    scene.rectangle((cx + half, torso_top + height * 0.02, cx + half * 1.3, leg_top), shirt, 'person')
    scene.ellipse((cx - head * 0.45, bottom - height, cx + head * 0.45, torso_top + 1), skin, 'person')


def _street_scene(rng: np.random.Generator, spec: SyntheticCityscapesSpec):
    h, w = spec.height, spec.width
    scene = _Scene(h, w)
    horizon = int(h * rng.uniform(0.42, 0.55))
    _paint_sky(rng, scene, horizon)
    _paint_buildings(rng, scene, horizon)
    _paint_trees(rng, scene, horizon)
    road_span = _paint_ground(rng, scene, horizon)

    # Things, far to near so that nearer ones cover farther ones. Apparent size
    # grows linearly with the distance below the horizon (flat ground).
    things = []
    for _ in range(int(rng.integers(1, 4))):
        things.append(('car', horizon + (h - horizon) * rng.uniform(0.3, 1.05)))
    for _ in range(int(rng.integers(1, 4))):
        things.append(('person', horizon + (h - horizon) * rng.uniform(0.35, 1.0)))
    for kind, bottom in sorted(things, key=lambda thing: thing[1]):
        scale = (bottom - horizon) / (h - horizon)
        left, right = road_span(min(bottom, h))
        if kind == 'car':
            width = scale * rng.uniform(0.3, 0.42) * w
            x = rng.uniform(left, max(left, right - width))
            _paint_car(rng, scene, x, bottom, width)
        else:
            height = scale * rng.uniform(0.55, 0.75) * h
            if rng.random() < 0.5 and left > 0.08 * w:
                cx = rng.uniform(0.04 * w, left - 0.04 * w)
            elif right < 0.92 * w:
                cx = rng.uniform(right + 0.04 * w, 0.96 * w)
            else:  # no sidewalk visible at that depth: a person crossing the road
                cx = rng.uniform(0.1, 0.9) * w
            _paint_person(rng, scene, cx, bottom, height)

    pixels = np.asarray(scene.image, dtype=np.float64)
    pixels = pixels * _low_frequency_field(rng, h, w, (3, 6), 0.15)[..., None]
    pixels = _add_noise(rng, Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), (2.0, 6.0))
    label = np.array(scene.label)
    boundary = np.zeros_like(label, dtype=bool)
    boundary[:, :-1] |= label[:, :-1] != label[:, 1:]
    boundary[:-1, :] |= label[:-1, :] != label[1:, :]
    label[boundary & (rng.random(label.shape) < _CITYSCAPES_IGNORE_BOUNDARY_SHARE)] = IGNORE_INDEX
    return pixels, label



def make_synthetic_cityscapes(out: str | Path, spec: SyntheticCityscapesSpec = SyntheticCityscapesSpec(), *,
                              overwrite: bool = False, progress: Progress = _no_progress) -> GeneratedDataset:
    """Write the street-scene segmentation dataset to ``out`` (see the module docstring).

    Arguments as for :func:`make_synthetic_coco`. Labels are single-channel
    uint8 PNGs holding the trainIds of :data:`CITYSCAPES_TRAIN_IDS` and 255.
    """
    out = Path(out)
    reused = _prepare_output(out, 'cityscapes', spec, ('leftImg8bit', 'gtFine'), overwrite)
    if reused:
        return reused
    num_images = {}
    for split, count in (('train', spec.num_train), ('val', spec.num_val)):
        cities = _CITYSCAPES_CITIES[split]
        for city in cities:
            (out / 'leftImg8bit' / split / city).mkdir(parents=True)
            (out / 'gtFine' / split / city).mkdir(parents=True)
        for index in progress(range(count), total=count, desc=f'cityscapes {split}'):
            pixels, label = _street_scene(_image_rng(spec.seed, split, index), spec)
            city = cities[index % len(cities)]
            stem = f'{city}_{index // len(cities):06d}_000019'  # <city>_<sequence>_<frame>
            Image.fromarray(pixels).save(out / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png')
            Image.fromarray(label).save(out / 'gtFine' / split / city / f'{stem}_gtFine_labelTrainIds.png')
        num_images[split] = count
    return _finish(out, 'cityscapes', spec, num_images, {})


GENERATORS = {'coco': (make_synthetic_coco, SyntheticCocoSpec, 'data/synthetic_coco'),
              'cityscapes': (make_synthetic_cityscapes, SyntheticCityscapesSpec, 'data/synthetic_cityscapes')}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('kind', choices=GENERATORS, help='which dataset')
    parser.add_argument('--out', help='output folder (default: data/synthetic_<kind>)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='image height and width (default: coco 320 320, cityscapes 256 512)')
    parser.add_argument('--num-train', type=int, help='train images (default: coco 200, cityscapes 60)')
    parser.add_argument('--num-val', type=int, help='val images (default: coco 50, cityscapes 20)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default: %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a dataset in OUT that was made with other arguments')
    args = parser.parse_args(argv)
    make, spec_type, default_out = GENERATORS[args.kind]
    given = dict(num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    if args.image_size:
        given.update(height=args.image_size[0], width=args.image_size[1])
    try:
        spec = spec_type(**{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        parser.error(str(err))
    from tqdm import tqdm

    try:
        result = make(args.out or default_out, spec, overwrite=args.overwrite,
                      progress=lambda it, **kw: tqdm(it, unit='img', **kw))
    except FileExistsError as err:
        sys.exit(f'error: {err}')
    if result.reused:
        print(f'{result.root} already holds this dataset; nothing written')
    for split, count in result.num_images.items():
        objects = f', {result.num_objects[split]} objects' if split in result.num_objects else ''
        print(f'{split}: {count} images{objects}')


if __name__ == '__main__':
    main()
