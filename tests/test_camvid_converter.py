"""CamVid -> Cityscapes-layout converter, on the shared CamVid subset and on fabricated folders."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camvid  # tools/dataset_converters/camvid.py (pyproject's pytest pythonpath)
from camvid import CAMVID_TO_CITYSCAPES_TRAIN_ID, CamVidError, convert_camvid, load_mapping

MAPPED_VALUES = set(CAMVID_TO_CITYSCAPES_TRAIN_ID)


def _write_pair(root: Path, split: str, name: str, label: np.ndarray):
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f'{split}annot').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    frame = rng.integers(0, 256, (*label.shape, 3), dtype=np.uint8)
    Image.fromarray(frame).save(root / split / name)
    Image.fromarray(label.astype(np.uint8)).save(root / f'{split}annot' / name)


@pytest.fixture
def tiny_camvid(tmp_path):
    """Two train frames of two sequences and one val frame, holding every value 0..11; no classes.json."""
    root = tmp_path / 'camvid'
    every_value = np.arange(12, dtype=np.uint8).reshape(3, 4).repeat(2, axis=0).repeat(2, axis=1)
    _write_pair(root, 'train', '0001TP_000010.png', every_value)
    _write_pair(root, 'train', '0006R0_f00020.png', every_value[::-1])
    _write_pair(root, 'val', '0016E5_00030.png', every_value[:, ::-1])
    return root


def _run_tool(argv):
    return camvid.main(argv)


def test_camvid_mapping_in_classes_json_is_the_documented_one(camvid_root):
    assert load_mapping(camvid_root) == (CAMVID_TO_CITYSCAPES_TRAIN_ID, 'classes.json')


def test_camvid_shared_subset_converts_to_cityscapes_layout(camvid_root, tmp_path):
    result = convert_camvid(camvid_root, tmp_path)
    assert result.num_images == {'train': 100, 'val': 101}
    assert result.sequences == {'train': ('0001TP', '0006R0'), 'val': ('0016E5',)}
    lut = np.array(CAMVID_TO_CITYSCAPES_TRAIN_ID, dtype=np.uint8)
    frame = sorted((camvid_root / 'val').glob('*.png'))[0]
    out_frame = tmp_path / 'leftImg8bit' / 'val' / '0016E5' / f'{frame.stem}_leftImg8bit.png'
    out_label = tmp_path / 'gtFine' / 'val' / '0016E5' / f'{frame.stem}_gtFine_labelTrainIds.png'
    assert out_frame.read_bytes() == frame.read_bytes()
    source = np.array(Image.open(camvid_root / 'valannot' / frame.name))
    np.testing.assert_array_equal(np.array(Image.open(out_label)), lut[source])
    for label in (tmp_path / 'gtFine').rglob('*_gtFine_labelTrainIds.png'):
        with Image.open(label) as pil:
            assert pil.mode == 'L'
            assert set(np.unique(np.array(pil)).tolist()) <= MAPPED_VALUES


def test_camvid_converted_subset_loads_in_mmseg_cityscapesdataset(camvid_root, tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.datasets import CityscapesDataset

    convert_camvid(camvid_root, tmp_path, splits=['val'])
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = CityscapesDataset(
            data_root=str(tmp_path), data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])
        assert len(dataset) == 101
        sample = dataset[0]
    assert sample['img'].shape == (360, 480, 3)
    assert sample['gt_seg_map'].shape == (360, 480)
    assert set(np.unique(sample['gt_seg_map']).tolist()) <= MAPPED_VALUES


def test_camvid_every_value_maps_to_its_train_id(tiny_camvid, tmp_path):
    result = convert_camvid(tiny_camvid, tmp_path)
    assert result.mapping_source == 'built-in'
    assert result.sequences == {'train': ('0001TP', '0006R0'), 'val': ('0016E5',)}
    label = np.array(Image.open(tmp_path / 'gtFine' / 'train' / '0001TP' / '0001TP_000010_gtFine_labelTrainIds.png'))
    np.testing.assert_array_equal(label[::2, ::2].reshape(-1), CAMVID_TO_CITYSCAPES_TRAIN_ID)


def test_camvid_rejects_label_value_outside_0_to_11(tiny_camvid, tmp_path):
    bad = tiny_camvid / 'valannot' / '0016E5_00030.png'
    label = np.array(Image.open(bad))
    label[0, 0] = 12
    Image.fromarray(label).save(bad)
    with pytest.raises(CamVidError, match=r'0016E5_00030\.png: label value 12 is outside 0\.\.11'):
        convert_camvid(tiny_camvid, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()  # checked before anything is written


def test_camvid_rejects_frame_without_label(tiny_camvid, tmp_path):
    (tiny_camvid / 'trainannot' / '0006R0_f00020.png').unlink()
    with pytest.raises(CamVidError, match=r'frame .*train/0006R0_f00020\.png has no label'):
        convert_camvid(tiny_camvid, tmp_path / 'out')


def test_camvid_rejects_missing_folder(tiny_camvid, tmp_path):
    for path in (tiny_camvid / 'valannot').iterdir():
        path.unlink()
    (tiny_camvid / 'valannot').rmdir()
    with pytest.raises(CamVidError, match=r'missing folder .*valannot'):
        convert_camvid(tiny_camvid, tmp_path / 'out')


def test_camvid_rejects_colour_label(tiny_camvid, tmp_path):
    bad = tiny_camvid / 'trainannot' / '0001TP_000010.png'
    Image.open(bad).convert('RGB').save(bad)
    with pytest.raises(CamVidError, match=r'0001TP_000010\.png: label must be a single-channel'):
        convert_camvid(tiny_camvid, tmp_path / 'out')


def test_camvid_refuses_to_overwrite_without_flag(tiny_camvid, tmp_path):
    convert_camvid(tiny_camvid, tmp_path)
    stale = tmp_path / 'gtFine' / 'train' / '0001TP' / 'stale.png'
    stale.write_bytes(b'')
    with pytest.raises(FileExistsError, match='--overwrite'):
        convert_camvid(tiny_camvid, tmp_path)
    assert stale.exists()
    convert_camvid(tiny_camvid, tmp_path, overwrite=True)
    assert not stale.exists()
    assert len(list((tmp_path / 'gtFine' / 'train').rglob('*.png'))) == 2


def test_camvid_tool_help_documents_mapping_and_reports_errors(tiny_camvid, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run_tool(['--help'])
    assert exit_info.value.code == 0
    assert '[10, 2, 5, 0, 1, 8, 7, 4, 13, 11, 12, 255]' in capsys.readouterr().out
    _run_tool([str(tiny_camvid), '--out', str(tmp_path)])
    assert 'train: 2 frames' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='error: .*already exists'):
        _run_tool([str(tiny_camvid), '--out', str(tmp_path)])
    with pytest.raises(SystemExit, match='error: missing folder'):
        _run_tool([str(tiny_camvid), '--out', str(tmp_path / 'other'), '--splits', 'test'])
