"""The synthetic demo datasets: determinism, validity, and loading in mmdet/mmseg."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import synthetic_data
from synthetic_data import (CITYSCAPES_TRAIN_IDS, COCO_CLASSES, IGNORE_INDEX, MANIFEST_NAME, SyntheticCityscapesSpec,
                            SyntheticCocoSpec, make_synthetic_cityscapes, make_synthetic_coco)

# Small enough to keep each generation well under a second.
COCO_SPEC = SyntheticCocoSpec(height=96, width=128, num_train=8, num_val=3, seed=3)
CITYSCAPES_SPEC = SyntheticCityscapesSpec(height=64, width=128, num_train=4, num_val=2, seed=3)
CITYSCAPES_LABELS = set(CITYSCAPES_TRAIN_IDS.values()) | {IGNORE_INDEX}


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_coco')
    make_synthetic_coco(root, COCO_SPEC)
    return root


@pytest.fixture(scope='module')
def cityscapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_cityscapes')
    make_synthetic_cityscapes(root, CITYSCAPES_SPEC)
    return root


def test_synthetic_coco_writes_same_bytes_every_run(coco_root, tmp_path):
    make_synthetic_coco(tmp_path, COCO_SPEC)
    assert _tree_bytes(tmp_path) == _tree_bytes(coco_root)


def test_synthetic_cityscapes_writes_same_bytes_every_run(cityscapes_root, tmp_path):
    make_synthetic_cityscapes(tmp_path, CITYSCAPES_SPEC)
    assert _tree_bytes(tmp_path) == _tree_bytes(cityscapes_root)


def test_synthetic_seed_changes_the_images(coco_root, tmp_path):
    make_synthetic_coco(tmp_path, dataclasses.replace(COCO_SPEC, seed=COCO_SPEC.seed + 1))
    ours, theirs = _tree_bytes(coco_root), _tree_bytes(tmp_path)
    assert ours['train2017/000002.jpg'] != theirs['train2017/000002.jpg']


def test_synthetic_coco_annotations_are_valid_for_pycocotools(coco_root):
    from pycocotools.coco import COCO

    side = min(COCO_SPEC.height, COCO_SPEC.width)
    for split, count in (('train', COCO_SPEC.num_train), ('val', COCO_SPEC.num_val)):
        coco = COCO(str(coco_root / 'annotations' / f'instances_{split}2017.json'))
        cats = coco.loadCats(coco.getCatIds())
        assert [c['name'] for c in cats] == list(COCO_CLASSES)
        assert all(c['supercategory'] == 'shape' for c in cats)
        assert len(coco.getImgIds()) == count
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(coco_root / f'{split}2017' / img['file_name']) as pil:
                assert pil.format == 'JPEG' and pil.mode == 'RGB'
                assert pil.size == (img['width'], img['height']) == (COCO_SPEC.width, COCO_SPEC.height)
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann['bbox']
            img = coco.imgs[ann['image_id']]
            assert w > 0 and h > 0
            assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
            assert 0.1 * side <= max(w, h) <= 0.9 * side
            assert 0 < ann['area'] <= w * h + 1e-6
            assert ann['iscrowd'] == 0 and ann['category_id'] in coco.cats
            polygon = np.array(ann['segmentation'][0]).reshape(-1, 2)
            assert len(polygon) >= 3
            np.testing.assert_allclose(polygon.min(0), [x, y], atol=0.02)
            # The polygon rasterises to the object: its mask fills the box.
            assert coco.annToMask(ann).sum() > 0.3 * w * h
    train = COCO(str(coco_root / 'annotations' / 'instances_train2017.json'))
    empty = [i for i in train.getImgIds() if not train.getAnnIds(imgIds=i)]
    assert empty, 'the train split should hold at least one image without objects'


def test_synthetic_coco_splits_are_disjoint(coco_root):
    train = {p.read_bytes() for p in (coco_root / 'train2017').iterdir()}
    val = {p.read_bytes() for p in (coco_root / 'val2017').iterdir()}
    assert not train & val


def test_synthetic_coco_loads_in_mmdet_cocodataset(coco_root):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = CocoDataset(
            data_root=str(coco_root), ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'), metainfo=dict(classes=COCO_CLASSES),
            filter_cfg=dict(filter_empty_gt=True),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True)])
        ann = json.loads((coco_root / 'annotations' / 'instances_train2017.json').read_text())
        assert len(dataset) == len({a['image_id'] for a in ann['annotations']})
        sample = dataset[0]
    assert sample['img'].shape == (COCO_SPEC.height, COCO_SPEC.width, 3)
    assert len(sample['gt_bboxes']) > 0
    assert set(sample['gt_bboxes_labels'].tolist()) <= set(range(len(COCO_CLASSES)))


def test_synthetic_cityscapes_layout_and_label_values(cityscapes_root):
    seen = set()
    for split, count in (('train', CITYSCAPES_SPEC.num_train), ('val', CITYSCAPES_SPEC.num_val)):
        images = sorted((cityscapes_root / 'leftImg8bit' / split).glob('*/*_leftImg8bit.png'))
        assert len(images) == count
        for image in images:
            city, stem = image.parent.name, image.name[:-len('_leftImg8bit.png')]
            assert stem.startswith(f'{city}_') and len(stem.split('_')) == 3
            label = cityscapes_root / 'gtFine' / split / city / f'{stem}_gtFine_labelTrainIds.png'
            with Image.open(image) as pil:
                assert pil.format == 'PNG' and pil.mode == 'RGB'
                assert pil.size == (CITYSCAPES_SPEC.width, CITYSCAPES_SPEC.height)
            with Image.open(label) as pil:
                assert pil.format == 'PNG' and pil.mode == 'L' and pil.size == (CITYSCAPES_SPEC.width,
                                                                                 CITYSCAPES_SPEC.height)
                values = set(np.unique(np.array(pil)).tolist())
            assert values <= CITYSCAPES_LABELS, values - CITYSCAPES_LABELS
            seen |= values
    assert seen == CITYSCAPES_LABELS


def test_synthetic_cityscapes_loads_in_mmseg_cityscapesdataset(cityscapes_root):
    from mmengine.registry import DefaultScope
    from mmseg.datasets import CityscapesDataset

    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = CityscapesDataset(
            data_root=str(cityscapes_root),
            data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])
        assert len(dataset) == CITYSCAPES_SPEC.num_train
        sample = dataset[0]
    assert sample['img'].shape == (CITYSCAPES_SPEC.height, CITYSCAPES_SPEC.width, 3)
    assert sample['gt_seg_map'].shape == (CITYSCAPES_SPEC.height, CITYSCAPES_SPEC.width)
    assert set(np.unique(sample['gt_seg_map']).tolist()) <= CITYSCAPES_LABELS


def test_synthetic_generator_reuses_matching_output(tmp_path):
    spec = SyntheticCityscapesSpec(height=64, width=64, num_train=1, num_val=1)
    assert not make_synthetic_cityscapes(tmp_path, spec).reused
    before = _tree_bytes(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')}
    result = make_synthetic_cityscapes(tmp_path, spec)
    assert result.reused and result.num_images == {'train': 1, 'val': 1}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')} == stamps
    assert _tree_bytes(tmp_path) == before


def test_synthetic_generator_refuses_other_arguments_without_overwrite(tmp_path):
    make_synthetic_coco(tmp_path, SyntheticCocoSpec(height=64, width=64, num_train=2, num_val=1))
    other = SyntheticCocoSpec(height=64, width=64, num_train=3, num_val=1)
    with pytest.raises(FileExistsError, match=r'num_train: 2 -> 3.*--overwrite'):
        make_synthetic_coco(tmp_path, other)
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())['args']['num_train'] == 2
    result = make_synthetic_coco(tmp_path, other, overwrite=True)
    assert not result.reused and result.num_images['train'] == 3
    assert len(list((tmp_path / 'train2017').iterdir())) == 3


def test_synthetic_generator_refuses_foreign_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('not ours')
    spec = SyntheticCocoSpec(height=64, width=64, num_train=1, num_val=1)
    with pytest.raises(FileExistsError, match='no mbn_synthetic.json'):
        make_synthetic_coco(tmp_path, spec)
    make_synthetic_coco(tmp_path, spec, overwrite=True)
    assert (tmp_path / 'notes.txt').read_text() == 'not ours'  # only our own paths are replaced


def test_synthetic_specs_reject_bad_arguments():
    with pytest.raises(ValueError, match='height must be >= 64, got 32'):
        SyntheticCityscapesSpec(height=32)
    with pytest.raises(ValueError, match='num_train must be >= 0, got -1'):
        SyntheticCocoSpec(num_train=-1)


def test_synthetic_generator_refuses_the_other_kind(tmp_path):
    make_synthetic_coco(tmp_path, SyntheticCocoSpec(height=64, width=64, num_train=1, num_val=0))
    with pytest.raises(FileExistsError, match='synthetic coco dataset, not cityscapes'):
        make_synthetic_cityscapes(tmp_path, SyntheticCityscapesSpec(height=64, width=64, num_train=1, num_val=0))


@pytest.mark.parametrize('kind', ['coco', 'cityscapes'])
def test_synthetic_tool_help_and_run(kind, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic_data.main(['--help'])
    assert exit_info.value.code == 0
    assert '--overwrite' in capsys.readouterr().out
    argv = [kind, '--out', str(tmp_path), '--image-size', '64', '64', '--num-train', '1', '--num-val', '1']
    synthetic_data.main(argv)
    assert 'train: 1 images' in capsys.readouterr().out
    synthetic_data.main(argv)
    assert 'nothing written' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='error: .*num_val: 1 -> 2.*--overwrite'):
        synthetic_data.main(argv[:-1] + ['2'])
    with pytest.raises(SystemExit) as exit_info:
        synthetic_data.main([kind, '--num-train', '-1'])
    assert exit_info.value.code == 2
    assert 'num_train must be >= 0, got -1' in capsys.readouterr().err
