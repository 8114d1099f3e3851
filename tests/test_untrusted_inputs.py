"""Datasets and checkpoints from strangers (docs/reliability.md, "Trust").

Every hostile file is built here, in a temporary folder: the real COCO and
Cityscapes configs refuse broken data naming the file; a checkpoint whose
head has another number of classes is refused by the tools (demo, test,
export) and reported once before a fine-tuning run; the converters write
atomically and refuse a crafted pickle in one line.
"""
import hashlib
import importlib.util
import json
import logging
import math
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import mbn_backbones  # noqa: F401  (registers our scope)
from mbn_backbones.datasets.checks import DataError

REPO = Path(__file__).resolve().parents[1]
COCO_CONFIG = REPO / 'configs/ssdlite/ssdlite_mobilenetv2_8xb24-600e_coco.py'
CITYSCAPES_CONFIG = REPO / 'configs/lraspp/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
DET_CONFIG = REPO / 'configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py'
SEG_CONFIG = REPO / 'configs/lraspp/lraspp_mobilenetv3-large_synthetic.py'


def load_tool(relative):
    spec = importlib.util.spec_from_file_location(f'mbn_tool_{Path(relative).stem}', REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LogRecords(logging.Handler):
    """Messages mmengine's current logger receives while in a ``with`` block."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        from mmengine.logging import MMLogger
        self.logger = MMLogger.get_current_instance()
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


def snapshot(root: Path) -> dict:
    """Bytes and mtime of every file under ``root``: the checks must change none."""
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob('*')) if p.is_file()}


# ---------------------------------------------------------------------------
# COCO-format data, written here

def coco_classes():
    from mmdet.datasets import CocoDataset
    return CocoDataset.METAINFO['classes']


def noise_jpeg(path: Path, size=(96, 64), seed=0):
    # noise: a JPEG large enough that cutting off its end leaves the header whole
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def write_coco(root: Path, split='train2017', n=2, size=(96, 64), classes=None, boxes=True):
    """A COCO-layout dataset of ``n`` noise images, one box each, all 80 COCO
    classes as categories (the real configs' metainfo)."""
    classes = classes or coco_classes()
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(exist_ok=True)
    images, annotations = [], []
    for i in range(1, n + 1):
        noise_jpeg(root / split / f'{i:06d}.jpg', size, seed=i)
        images.append(dict(id=i, file_name=f'{i:06d}.jpg', width=size[0], height=size[1]))
        if boxes:
            annotations.append(dict(id=i, image_id=i, category_id=1, bbox=[10, 12, 40, 36],
                                    area=40 * 36, iscrowd=0))
    data = dict(images=images, annotations=annotations,
                categories=[dict(id=j + 1, name=c) for j, c in enumerate(classes)])
    ann_file = root / 'annotations' / f'instances_{split}.json'
    ann_file.write_text(json.dumps(data))
    return ann_file


def edit_annotations(ann_file: Path, edit):
    data = json.loads(ann_file.read_text())
    edit(data)
    ann_file.write_text(json.dumps(data))  # NaN is written as JSON's NaN, which json reads back


def build_from_config(config: Path, split: str, root: Path, **overrides):
    """``{split}_dataloader.dataset`` of a real config, on the data in ``root``."""
    from mmengine.registry import DATASETS, DefaultScope
    cfg = Config.fromfile(str(config))
    dataset = cfg[f'{split}_dataloader'].dataset
    inner = dataset.dataset if dataset.type == 'RepeatDataset' else dataset
    inner.data_root = f'{root}/'
    inner.update(overrides)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return DATASETS.build(dataset)


def test_the_real_coco_config_builds_the_checked_dataset(tmp_path):
    from mbn_backbones.datasets import CocoDataset
    write_coco(tmp_path)
    dataset = build_from_config(COCO_CONFIG, 'train', tmp_path)
    assert isinstance(dataset.dataset, CocoDataset) and len(dataset) == 5 * 2  # RepeatDataset(times=5)
    assert Config.fromfile(str(COCO_CONFIG)).val_dataloader.dataset.type == 'mbn_backbones.CocoDataset'


BAD_BOXES = {
    'zero area': ([10, 12, 0, 5], r'bbox \[10, 12, 0, 5\] has non-positive size \(width 0, height 5\)'),
    'out of range': ([80, 10, 40, 20], r'bbox \[80, 10, 40, 20\] \(x1, y1, x2, y2 = 80, 10, 120, 30\) '
                                       r'lies outside the 96x64 image'),
    'NaN': ([10, float('nan'), 20, 20], r'bbox must be \[x, y, width, height\] of four finite numbers, '
                                        r'got \[10, nan, 20, 20\]'),
}


@pytest.mark.parametrize('case', sorted(BAD_BOXES))
def test_the_real_coco_config_refuses_a_bad_box_naming_its_image(tmp_path, case):
    box, message = BAD_BOXES[case]
    ann_file = write_coco(tmp_path)
    edit_annotations(ann_file, lambda d: d['annotations'][1].update(bbox=box))
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=rf'instances_train2017.json: 1 problem:\n  annotation id 2 '
                                        rf'\(image 000002.jpg\): {message}'):
        build_from_config(COCO_CONFIG, 'train', tmp_path)
    assert snapshot(tmp_path) == before


def test_coco_annotations_without_boxes_are_refused_not_looped_over(tmp_path):
    # mmdet filters out every image (filter_empty_gt) and an InfiniteSampler
    # then never yields a batch: an iteration-based run hangs at iteration 0.
    write_coco(tmp_path, boxes=False)
    with pytest.raises(DataError, match=r'instances_train2017.json: filter_cfg removes all 2 images '
                                        r'\(2 have no box of the classes \(filter_empty_gt=True\); 0 are '
                                        r'smaller than min_size=32\).*wait for its first batch forever'):
        build_from_config(COCO_CONFIG, 'train', tmp_path)


def test_coco_annotations_without_images_are_refused(tmp_path):
    ann_file = write_coco(tmp_path, split='val2017')
    edit_annotations(ann_file, lambda d: d.update(images=[], annotations=[]))
    with pytest.raises(DataError, match=r'instances_val2017.json lists no image: there is nothing'):
        build_from_config(COCO_CONFIG, 'val', tmp_path)


def test_truncated_jpeg_passes_the_header_check_and_fails_full_decoding(tmp_path):
    write_coco(tmp_path)
    image = tmp_path / 'train2017' / '000002.jpg'
    image.write_bytes(image.read_bytes()[:image.stat().st_size * 2 // 3])
    assert len(build_from_config(COCO_CONFIG, 'train', tmp_path)) == 10  # header intact
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r'image id 2: .*train2017/000002.jpg: not a readable image '
                                        r'\(image file is truncated'):
        build_from_config(COCO_CONFIG, 'train', tmp_path, verify_images='full')
    assert snapshot(tmp_path) == before


def test_unknown_verify_images_value_is_named(tmp_path):
    write_coco(tmp_path)
    with pytest.raises(ValueError, match=r"verify_images must be one of \('header', 'full', 'exists', "
                                         r"False\), got 'decode'"):
        build_from_config(COCO_CONFIG, 'train', tmp_path, verify_images='decode')


def png_bomb(path: Path, side: int):
    """A real decompression bomb: a ``side`` x ``side`` 1-bit black PNG (13441: 22 KB)."""
    row = b'\0' * (1 + (side + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    idat = b''.join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 1, 0, 0, 0, 0))
                     + chunk(b'IDAT', idat) + chunk(b'IEND', b''))


def test_decompression_bomb_is_refused_naming_the_file(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    side = math.isqrt(2 * limit) + 64  # past twice the limit: PIL raises, not warns
    ann_file = write_coco(tmp_path)
    png_bomb(tmp_path / 'train2017' / 'bomb.png', side)
    assert (tmp_path / 'train2017' / 'bomb.png').stat().st_size < 2 ** 20
    edit_annotations(ann_file, lambda d: d['images'][1].update(file_name='bomb.png', width=side,
                                                                height=side))
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r'image id 2: .*train2017/bomb.png: refused as a decompression '
                                        rf'bomb \(Image size \({side * side} pixels\) exceeds limit'):
        build_from_config(COCO_CONFIG, 'train', tmp_path)
    assert snapshot(tmp_path) == before


def test_image_between_one_and_two_times_pils_limit_is_refused_too(tmp_path, monkeypatch):
    write_coco(tmp_path)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 96 * 64 - 1)  # PIL itself only warns here
    with pytest.raises(DataError, match=r"000001.jpg: 96x64 pixels is over PIL's limit of 6143 "
                                        r'\(PIL.Image.MAX_IMAGE_PIXELS'):
        build_from_config(COCO_CONFIG, 'train', tmp_path)


def test_grey_and_rgba_images_are_converted_and_said_so(tmp_path):
    ann_file = write_coco(tmp_path, n=3)
    Image.new('L', (96, 64), 128).save(tmp_path / 'train2017' / 'grey.jpg')
    Image.new('RGBA', (96, 64), (10, 20, 30, 0)).save(tmp_path / 'train2017' / 'alpha.png')

    def edit(data):
        data['images'][0]['file_name'] = 'grey.jpg'
        data['images'][1]['file_name'] = 'alpha.png'
    edit_annotations(ann_file, edit)
    with LogRecords() as log:
        dataset = build_from_config(COCO_CONFIG, 'train', tmp_path).dataset
    assert len(dataset) == 3
    alpha, grey = dataset.image_notes
    assert alpha.startswith('images with an alpha channel (1, e.g. ') and alpha.endswith(
        'alpha.png): the loader drops it and keeps the colour under transparent pixels as it is')
    assert grey.startswith('grey images (one channel) (1, e.g. ') and grey.endswith(
        'grey.jpg): the loader repeats the channel 3 times')
    assert sum('grey images (one channel)' in m for m in log.messages) == 1


@pytest.mark.parametrize('kind', ['grey16', 'rgb48'])
def test_16_bit_images_are_refused(tmp_path, kind):
    ann_file = write_coco(tmp_path)
    path = tmp_path / 'train2017' / 'deep.png'
    if kind == 'grey16':
        Image.fromarray(np.full((64, 96), 4000, np.uint16)).save(path)
    else:
        assert cv2.imwrite(str(path), np.full((64, 96, 3), 4000, np.uint16))
    edit_annotations(ann_file, lambda d: d['images'][0].update(file_name='deep.png'))
    with pytest.raises(DataError, match=r'image id 1: .*train2017/deep.png: more than 8 bits per '
                                        r'channel \(mode .*\); the loader would divide by 256'):
        build_from_config(COCO_CONFIG, 'train', tmp_path)


def test_real_coco128_passes_full_decoding(coco128_root):
    from mbn_backbones.datasets import CocoDataset
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = CocoDataset(data_root=f'{coco128_root}/', ann_file='annotations/instances_train.json',
                              data_prefix=dict(img='images/'), pipeline=[], verify_images='full')
    assert len(dataset) == 128
    # one of COCO's grey photos; the loader makes it 3-channel
    assert dataset.image_notes == [f'grey images (one channel) (1, e.g. {coco128_root}/images/'
                                   f'000000000086.jpg): the loader repeats the channel 3 times']


# ---------------------------------------------------------------------------
# Cityscapes-format data, written here

def write_cityscapes(root: Path, split='val', n=2, size=(64, 32)):
    for i in range(n):
        img = root / 'leftImg8bit' / split / 'town'
        seg = root / 'gtFine' / split / 'town'
        img.mkdir(parents=True, exist_ok=True)
        seg.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', size, (i * 50, 80, 120)).save(img / f'town_{i}_leftImg8bit.png')
        Image.fromarray(np.full(size[::-1], i, np.uint8)).save(seg / f'town_{i}_gtFine_labelTrainIds.png')
    return root / 'leftImg8bit' / split / 'town'


def test_the_real_cityscapes_config_checks_its_images(tmp_path):
    images = write_cityscapes(tmp_path)
    assert len(build_from_config(CITYSCAPES_CONFIG, 'val', tmp_path)) == 2
    png_bomb(images / 'town_1_leftImg8bit.png', math.isqrt(2 * Image.MAX_IMAGE_PIXELS) + 64)
    Image.fromarray(np.full((32, 64), 300, np.uint16)).save(images / 'town_0_leftImg8bit.png')
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r'(?s)2 problems:\n  .*town_0_leftImg8bit.png: more than 8 '
                                        r'bits per channel.*\n  .*town_1_leftImg8bit.png: refused as a '
                                        r'decompression bomb'):
        build_from_config(CITYSCAPES_CONFIG, 'val', tmp_path)
    assert snapshot(tmp_path) == before


def test_truncated_cityscapes_image_fails_full_decoding(tmp_path):
    images = write_cityscapes(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / 'town_1_leftImg8bit.png')
    path = images / 'town_1_leftImg8bit.png'
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    assert len(build_from_config(CITYSCAPES_CONFIG, 'val', tmp_path)) == 2
    with pytest.raises(DataError, match=r'town_1_leftImg8bit.png: not a readable image'):
        build_from_config(CITYSCAPES_CONFIG, 'val', tmp_path, verify_images='full')


# ---------------------------------------------------------------------------
# Checkpoints whose head has another number of classes

def build_model(config: Path, scope: str, **head):
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(str(config))
    head_name = 'bbox_head' if scope == 'mmdet' else 'decode_head'
    cfg.model[head_name].update(head)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def coco80_checkpoint(tmp_path_factory):
    """The synthetic SSDLite config's model (4 classes) with an 80-class head, as a
    COCO-trained checkpoint would be, with the dataset_meta tools/train.py saves."""
    path = tmp_path_factory.mktemp('ckpt') / 'ssdlite_coco80.pth'
    model = build_model(DET_CONFIG, 'mmdet', num_classes=80)
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': coco_classes()}}}, path)
    return path


def test_class_counts_are_read_from_the_tensors(coco80_checkpoint):
    from mbn_backbones.engine import ClassCountMismatch, class_count_mismatches
    checkpoint = torch.load(coco80_checkpoint, weights_only=True)
    detector = build_model(DET_CONFIG, 'mmdet')
    assert class_count_mismatches(detector, checkpoint) == [
        ClassCountMismatch('bbox_head', 4, 80, coco_classes())]
    assert class_count_mismatches(detector, {'state_dict': detector.state_dict()}) == []
    # mmseg: the LR-ASPP head's two classifiers (conv_seg, low_classifier), no meta
    segmentor = build_model(SEG_CONFIG, 'mmseg')
    camvid = build_model(SEG_CONFIG, 'mmseg', num_classes=11)
    assert class_count_mismatches(segmentor, camvid.state_dict()) == [
        ClassCountMismatch('decode_head', 7, 11)]
    assert str(class_count_mismatches(detector, checkpoint)[0]) == (
        "the checkpoint's bbox_head was trained for 80 classes (person, bicycle, car, motorcycle, "
        "airplane, ...), the model's bbox_head is built for num_classes=4")


COUNTS = r"the checkpoint's bbox_head was trained for 80 classes \(person, .*num_classes=4"


def test_image_demo_refuses_a_head_of_another_class_count(coco80_checkpoint, tmp_path):
    image = tmp_path / 'scene.png'
    Image.new('RGB', (160, 120), (200, 200, 200)).save(image)
    demo = load_tool('tools/demo/image_demo.py')
    with pytest.raises(SystemExit, match=rf'(?s){COUNTS}.*Nothing was drawn'):
        demo.main([str(image), str(DET_CONFIG), str(coco80_checkpoint), '--out', str(tmp_path / 'o.png')])
    assert not (tmp_path / 'o.png').exists()


def test_test_tool_refuses_a_head_of_another_class_count(coco80_checkpoint, tmp_path):
    test = load_tool('tools/test.py')
    with pytest.raises(SystemExit, match=rf'(?s)does not fit SingleStageDetector:\n  {COUNTS}\n  '
                                         r'shape mismatches'):
        test.main([str(DET_CONFIG), str(coco80_checkpoint), '--work-dir', str(tmp_path / 'work')])


def test_export_refuses_a_head_of_another_class_count(coco80_checkpoint, tmp_path):
    export = load_tool('tools/deployment/pytorch2onnx.py')
    with pytest.raises(SystemExit, match=rf'does not fit SingleStageDetector: {COUNTS}; 0 missing'):
        export.main([str(DET_CONFIG), '--checkpoint', str(coco80_checkpoint),
                     '--out', str(tmp_path / 'model.onnx')])
    assert not (tmp_path / 'model.onnx').exists()


@pytest.mark.parametrize('how', ['load_from', 'init_cfg'])
def test_fine_tuning_from_another_class_count_is_said_once_before_training(
        coco80_checkpoint, tmp_path, how):
    from mmengine.runner import Runner
    write_coco(tmp_path / 'data', n=2, classes=('circle', 'square', 'triangle', 'cross'))
    cfg = Config.fromfile(str(DET_CONFIG))
    assert dict(type='mbn_backbones.ClassCountHook') in cfg.custom_hooks
    cfg.merge_from_dict({
        'work_dir': str(tmp_path / 'work'), 'train_cfg.max_epochs': 1,
        'train_dataloader.batch_size': 2, 'train_dataloader.num_workers': 0,
        'train_dataloader.dataset.data_root': f'{tmp_path}/data/',
        'default_hooks.checkpoint': None})
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    if how == 'load_from':
        cfg.load_from = str(coco80_checkpoint)
    else:
        cfg.model.init_cfg = dict(type='Pretrained', checkpoint=str(coco80_checkpoint))
    runner = Runner.from_cfg(cfg)
    with LogRecords() as log:
        runner.train()
    said = [i for i, m in enumerate(log.messages) if 'trained for 80 classes' in m]
    assert len(said) == 1
    first_iteration = next(i for i, m in enumerate(log.messages) if 'Epoch(train)' in m)
    assert said[0] < first_iteration
    what = 'load_from' if how == 'load_from' else 'model.init_cfg'
    assert log.messages[said[0]].startswith(
        f"{what} {coco80_checkpoint}: the checkpoint's bbox_head was trained for 80 classes")
    assert 'Fine when fine-tuning for 4 classes' in log.messages[said[0]]


# ---------------------------------------------------------------------------
# Converters

@pytest.fixture
def torchvision_checkpoint(tmp_path):
    import torchvision
    path = tmp_path / 'mobilenet_v3_small.pth'
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    return path


def test_converter_refuses_a_crafted_pickle_in_one_line(tmp_path, capsys, code_marker):
    from mbn_backbones.converters import ConversionError, cli_main, convert_checkpoint
    src = tmp_path / 'mobilenet_v2.pth'
    torch.save({'state_dict': {'features.0.0.weight': code_marker}}, src)
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(str(src), str(tmp_path / 'out.pth'), 'torchvision')
    assert '\n' not in str(err.value)
    assert str(err.value).startswith(f'refused to load checkpoint {src}: it asks for posix.system')
    assert cli_main('torchvision', [str(src), str(tmp_path / 'out.pth')]) == 1
    stderr = capsys.readouterr().err
    assert stderr.count('\n') == 1 and f'refused to load checkpoint {src}' in stderr
    assert not code_marker.path.exists() and not (tmp_path / 'out.pth').exists()


def test_converter_names_a_truncated_checkpoint(torchvision_checkpoint, tmp_path):
    from mbn_backbones.converters import ConversionError, convert_checkpoint
    torchvision_checkpoint.write_bytes(torchvision_checkpoint.read_bytes()[:4000])
    with pytest.raises(ConversionError, match=rf'^checkpoint {torchvision_checkpoint} \(4000 bytes\) '
                                              r'is truncated or not a torch checkpoint'):
        convert_checkpoint(str(torchvision_checkpoint), str(tmp_path / 'out.pth'), 'torchvision')


def test_converter_failing_mid_write_keeps_the_old_file_and_leaves_no_temporary(
        torchvision_checkpoint, tmp_path, monkeypatch):
    from mbn_backbones import converters
    out = tmp_path / 'out'
    out.mkdir()
    dst = out / 'mbv3_small.pth'
    dst.write_bytes(b'the previous conversion')
    (out / 'mbv3_small.pth.tmp').write_bytes(b'a file of the user')  # the old fixed temporary name
    before = snapshot(out)

    def failing_save(obj, f):
        f.write(b'half a checkpoint')
        raise OSError(5, 'Input/output error')
    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='Input/output error'):
        converters.convert_checkpoint(str(torchvision_checkpoint), str(dst), 'torchvision',
                                      overwrite=True)
    assert snapshot(out) == before  # nothing replaced, nothing left behind
    monkeypatch.undo()

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(fd) or real_fsync(fd))
    converters.convert_checkpoint(str(torchvision_checkpoint), str(dst), 'torchvision', overwrite=True)
    assert synced
    assert sorted(p.name for p in out.iterdir()) == ['mbv3_small.pth', 'mbv3_small.pth.tmp']
    assert (out / 'mbv3_small.pth.tmp').read_bytes() == b'a file of the user'
    assert torch.load(dst, weights_only=True)['meta']['source'] == 'torchvision.mobilenet_v3_small'
