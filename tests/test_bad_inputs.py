"""The catalogue of bad inputs (docs/reliability.md): each gets a message naming the problem.

Every test feeds one broken thing (argument, config key, image, annotation,
label map, checkpoint, work dir) to the code a user runs and checks the
message names the argument, file or value, and that nothing was changed.
Checkpoint saving, NaN losses and kills are in test_reliability_checkpoints.py.
"""
import copy
import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mbn_backbones  # noqa: F401  (registers our scope)
from synthetic_data import SyntheticCocoSpec, make_synthetic_coco
from mbn_backbones.datasets.checks import DataError

REPO = Path(__file__).resolve().parents[1]
DET_CONFIG = REPO / 'configs' / 'ssdlite' / 'ssdlite_mobilenetv3-large_synthetic.py'
CLASSES = ('circle', 'square', 'triangle', 'cross')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'mbn_tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------
# models

def test_backbone_refuses_images_smaller_than_its_deepest_stride():
    from mbn_backbones.models import MobileNetV3
    net = MobileNetV3('small', out_indices=(12,)).eval()
    with pytest.raises(ValueError, match=r'needs images of at least 32x32 pixels .* got 24x64'):
        net(torch.zeros(1, 3, 24, 64))
    assert net(torch.zeros(1, 3, 32, 32))[0].shape[-2:] == (1, 1)
    # dilated: the deepest output has stride 16
    dilated = MobileNetV3('small', out_indices=(12,), output_stride=16).eval()
    assert dilated(torch.zeros(1, 3, 16, 16))[0].shape[-2:] == (1, 1)


def test_ssdlite_neck_names_the_channels_it_expected():
    from mbn_backbones.models.necks import SSDLiteNeck
    neck = SSDLiteNeck(in_channels=(672, 960), extra_channels=(64,))
    with pytest.raises(ValueError, match=r'built for features with channels \(672, 960\), '
                                         r'got \(576, 1280\).*neck.in_channels'):
        neck([torch.zeros(1, 576, 4, 4), torch.zeros(1, 1280, 2, 2)])


def test_ssdlite_head_levels_must_match_the_anchor_levels():
    from mmengine.registry import MODELS, DefaultScope
    with pytest.raises(ValueError, match=r'in_channels has 3 levels \(8, 8, 8\) but the anchor '
                                         r'generator 2'), DefaultScope.overwrite_default_scope('mmdet'):
        MODELS.build(dict(type='mbn_backbones.SSDLiteHead', num_classes=4, in_channels=(8, 8, 8),
                          anchor_generator=dict(type='mbn_backbones.SSDLiteAnchorGenerator',
                                                strides=(16, 32), input_size=64)))


# ---------------------------------------------------------------------------
# configs

def det_cfg():
    from mmengine.config import Config
    return Config.fromfile(str(DET_CONFIG))


def test_config_key_typo_is_named_with_the_right_key():
    from mbn_backbones.engine import ConfigError, check_config
    cfg = det_cfg()
    check_config(cfg)
    cfg.model.backbone.widen_factr = 0.75
    with pytest.raises(ConfigError, match=r"model.backbone.widen_factr: MobileNetV3 has no argument "
                                          r"'widen_factr'; did you mean 'widen_factor'\?"):
        check_config(cfg)


def test_unknown_config_key_lists_the_accepted_ones():
    from mbn_backbones.engine import ConfigError, check_config
    cfg = det_cfg()
    cfg.model.neck.depth = 3
    with pytest.raises(ConfigError, match=r"model.neck.depth: SSDLiteNeck has no argument 'depth' "
                                          r"\(it takes: in_channels, extra_channels"):
        check_config(cfg)


def test_train_tool_stops_on_a_config_typo_before_building(tmp_path):
    train = load_tool('train')
    with pytest.raises(SystemExit, match=r"widen_factr.*did you mean 'widen_factor'"):
        train.main([str(DET_CONFIG), '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options', 'model.backbone.widen_factr=0.5'])
    assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('config,option,hint', [
    (DET_CONFIG, 'train_cfg.max_iters=100', 'train_cfg.max_epochs=1'),
    (REPO / 'configs' / 'ssd' / 'ssd300_mobilenetv2_8xb8-120e_coco.py', 'train_cfg.max_iters=100',
     'train_cfg.max_epochs=1'),
    (REPO / 'configs' / 'lraspp' / 'lraspp_mobilenetv3-large_synthetic.py',
     'train_cfg.max_epochs=1', 'train_cfg.max_iters=20'),
])
def test_train_tool_refuses_a_loop_option_of_the_other_kind_before_writing(tmp_path, config,
                                                                           option, hint):
    train = load_tool('train')
    key = option.split('=')[0]
    with pytest.raises(SystemExit, match=rf': {key} not taken by \w+TrainLoop, which takes .*'
                                         rf'nothing was written.*{hint}'):
        train.main([str(config), '--work-dir', str(tmp_path / 'w'), '--cfg-options', option])
    assert not (tmp_path / 'w').exists()
    # the option the message suggests passes the same check
    args = train.parse_args([str(config), '--cfg-options', hint])
    train.check_train_loop_options(train.build_cfg(args), str(config))


# ---------------------------------------------------------------------------
# work dirs and --resume

@pytest.fixture
def used_work_dir(tmp_path):
    work_dir = tmp_path / 'run1'
    work_dir.mkdir()
    (work_dir / 'epoch_3.pth').write_bytes(b'weights of the first run')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth'))
    return work_dir


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_train_refuses_a_work_dir_holding_another_run(used_work_dir):
    before = snapshot(used_work_dir)
    train = load_tool('train')
    with pytest.raises(SystemExit, match=r'already holds a run \(epoch_3.pth, last_checkpoint\); '
                                         r'nothing was changed.*--resume'):
        train.main([str(DET_CONFIG), '--work-dir', str(used_work_dir)])
    assert snapshot(used_work_dir) == before


def test_resume_from_a_missing_checkpoint_is_named(tmp_path):
    train = load_tool('train')
    missing = tmp_path / 'nowhere' / 'epoch_9.pth'
    with pytest.raises(SystemExit, match=f'checkpoint file not found: {missing}'):
        train.main([str(DET_CONFIG), '--work-dir', str(tmp_path / 'w'), '--resume', str(missing)])


def test_last_checkpoint_naming_a_lost_file_is_refused(used_work_dir):
    (used_work_dir / 'epoch_3.pth').unlink()
    train = load_tool('train')
    with pytest.raises(SystemExit, match=r"last_checkpoint names '.*epoch_3.pth', which does not exist"):
        train.main([str(DET_CONFIG), '--work-dir', str(used_work_dir), '--resume'])


def test_moved_work_dir_resumes_from_its_own_copy(used_work_dir, tmp_path):
    from mbn_backbones.engine import resolve_last_checkpoint
    moved = tmp_path / 'moved'
    shutil.move(used_work_dir, moved)  # last_checkpoint still names the old absolute path
    assert resolve_last_checkpoint(str(moved)) == str(moved / 'epoch_3.pth')


# ---------------------------------------------------------------------------
# checkpoints

@pytest.fixture
def crafted_checkpoint(tmp_path, code_marker):
    path = tmp_path / 'crafted.pth'
    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=dict(note=code_marker)), path)
    return path, code_marker.path


def test_crafted_pickle_checkpoint_is_refused_and_runs_nothing(crafted_checkpoint):
    from mbn_backbones.engine import read_checkpoint  # what mbn_backbones.Runner loads with
    path, marker = crafted_checkpoint
    with pytest.raises(pickle.UnpicklingError,
                       match=rf'refused to load checkpoint {path}: it asks for posix.system'):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_truncated_checkpoint_is_named_as_truncated(tmp_path):
    from mbn_backbones.engine import CheckpointError, read_checkpoint
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': torch.nn.Linear(4, 4).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=rf'checkpoint {path} \(300 bytes\) is truncated'):
        read_checkpoint(str(path))
    empty = tmp_path / 'epoch_2.pth'
    empty.touch()
    with pytest.raises(CheckpointError, match=rf'checkpoint {empty} is empty \(0 bytes\)'):
        read_checkpoint(str(empty))


def test_checkpoint_of_another_model_lists_missing_unexpected_and_shapes():
    from mbn_backbones.engine import CheckpointMismatchError, check_state_dict_matches
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(CheckpointMismatchError) as err:
        check_state_dict_matches(model, {'state_dict': other.state_dict()}, 'other.pth')
    message = str(err.value)
    assert 'checkpoint other.pth does not fit Sequential' in message
    assert 'missing keys (in the model, not in the checkpoint) 2: 1.bias, 1.weight' in message
    assert 'unexpected keys (in the checkpoint, not in the model) 2: 2.bias, 2.weight' in message
    assert 'shape mismatches 2: 0.bias: checkpoint (5,) vs model (3,)' in message
    check_state_dict_matches(model, {'state_dict': model.state_dict()})  # a fitting one passes


def test_test_tool_names_a_missing_checkpoint(tmp_path):
    test = load_tool('test')
    with pytest.raises(SystemExit, match=f'checkpoint file not found: {tmp_path}/none.pth'):
        test.main([str(DET_CONFIG), str(tmp_path / 'none.pth')])


# ---------------------------------------------------------------------------
# COCO detection data

@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_synthetic_coco(root, SyntheticCocoSpec(height=64, width=96, num_train=3, num_val=0))
    return root


def build_coco(root, ann_file='annotations/instances_train2017.json', classes=CLASSES, **kwargs):
    from mmengine.registry import DATASETS, DefaultScope
    kwargs.setdefault('data_prefix', dict(img='train2017/'))
    if classes is not None:
        kwargs['metainfo'] = dict(classes=classes)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(dict(type='mbn_backbones.CocoDataset', data_root=f'{root}/',
                                   ann_file=ann_file, pipeline=[], **kwargs))


def broken_coco(coco, tmp_path, edit):
    """A copy of the tiny dataset whose annotation file ``edit`` changed."""
    root = tmp_path / 'data'
    shutil.copytree(coco, root)
    ann = root / 'annotations' / 'instances_train2017.json'
    data = json.loads(ann.read_text())
    edit(data)
    ann.write_text(json.dumps(data))
    return root


def test_valid_coco_builds(coco):
    assert len(build_coco(coco)) == 3


def test_missing_annotation_file_is_named(coco):
    with pytest.raises(FileNotFoundError, match=r'annotation file not found: .*/instances_tran.json'):
        build_coco(coco, ann_file='annotations/instances_tran.json')


def test_empty_annotation_file_is_named(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: None)
    (root / 'annotations' / 'instances_train2017.json').write_text('')
    with pytest.raises(DataError, match=r'instances_train2017.json is empty \(0 bytes\)'):
        build_coco(root)


def test_malformed_json_names_line_and_column(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: None)
    (root / 'annotations' / 'instances_train2017.json').write_text('{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(DataError, match=r'is not valid JSON: Expecting property name enclosed in '
                                        r'double quotes at line 2 column 12'):
        build_coco(root)


def test_annotation_file_without_annotations_list(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: d.pop('annotations'))
    with pytest.raises(DataError, match=r"has no list 'annotations' \(top-level keys: \['categories', "):
        build_coco(root)


def first_box(data, box):
    data['annotations'][0]['bbox'] = box


def test_box_with_non_positive_size_is_named(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: first_box(d, [10, 12, 0, 5]))
    with pytest.raises(DataError, match=r'annotation id 1 \(image 00000\d.jpg\): bbox \[10, 12, 0, 5\] '
                                        r'has non-positive size \(width 0, height 5\)'):
        build_coco(root)


def test_box_outside_the_image_is_named(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: first_box(d, [80, 10, 40, 20]))
    with pytest.raises(DataError, match=r'bbox \[80, 10, 40, 20\] \(x1, y1, x2, y2 = 80, 10, 120, 30\) '
                                        r'lies outside the 96x64 image'):
        build_coco(root)


def test_box_that_is_not_four_numbers_is_named(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: first_box(d, [1, 2, 'wide', None]))
    with pytest.raises(DataError, match=r'bbox must be \[x, y, width, height\] of four finite numbers'):
        build_coco(root)


def test_unknown_category_id_is_named(coco, tmp_path):
    def edit(data):
        data['annotations'][0]['category_id'] = 91
    root = broken_coco(coco, tmp_path, edit)
    with pytest.raises(DataError, match=r'annotation id 1 .*category_id 91 is not in "categories" '
                                        r'\(ids: \[1, 2, 3, 4\]\)'):
        build_coco(root)


def test_annotation_of_an_unknown_image_is_named(coco, tmp_path):
    def edit(data):
        data['annotations'][-1]['image_id'] = 77
    root = broken_coco(coco, tmp_path, edit)
    with pytest.raises(DataError, match=r'image_id 77 is not in "images"'):
        build_coco(root)


def test_duplicate_annotation_ids_are_named(coco, tmp_path):
    def edit(data):
        data['annotations'].append(copy.deepcopy(data['annotations'][0]))
    root = broken_coco(coco, tmp_path, edit)
    with pytest.raises(DataError, match=r'annotation id 1 .*appears twice in "annotations"'):
        build_coco(root)


def test_class_name_typo_in_metainfo_is_named(coco):
    with pytest.raises(DataError, match=r"class 'cirle' of the config's metainfo is not a category "
                                        r"of the file; did you mean 'circle'\?"):
        build_coco(coco, classes=('cirle', 'square', 'triangle', 'cross'))


def test_missing_image_file_is_named(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: None)
    (root / 'train2017' / '000002.jpg').unlink()
    with pytest.raises(DataError, match=r'image id 2: .*train2017/000002.jpg: file not found'):
        build_coco(root)


def test_corrupt_image_file_is_named(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: None)
    (root / 'train2017' / '000003.jpg').write_bytes(b'<html>404 not found</html>')
    with pytest.raises(DataError, match=r'000003.jpg: not a readable image'):
        build_coco(root)


def test_truncated_image_is_found_when_decoding(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: None)
    image = root / 'train2017' / '000001.jpg'
    data = image.read_bytes()
    image.write_bytes(data[:len(data) * 2 // 3])
    assert len(build_coco(root)) == 3  # the header alone is intact
    with pytest.raises(DataError, match=r'000001.jpg: not a readable image \(image file is truncated'):
        build_coco(root, verify_images='full')


def test_image_of_another_size_than_recorded_is_named(coco, tmp_path):
    root = broken_coco(coco, tmp_path, lambda d: None)
    Image.new('RGB', (50, 40)).save(root / 'train2017' / '000002.jpg')
    with pytest.raises(DataError, match=r'000002.jpg: image is 50x40, the annotation file says 96x64'):
        build_coco(root)


def test_real_coco128_passes_the_checks(coco128_root):
    ds = build_coco(coco128_root, ann_file='annotations/instances_train.json', classes=None,
                    data_prefix=dict(img='images/'), verify_images='full')
    assert len(ds) == 128


# ---------------------------------------------------------------------------
# Cityscapes-format segmentation data

NUM_CLASSES = 19  # Cityscapes trainIds


@pytest.fixture
def cityscapes(tmp_path):
    root = tmp_path / 'cityscapes'
    for i in range(2):
        img = root / 'leftImg8bit' / 'train' / 'town'
        seg = root / 'gtFine' / 'train' / 'town'
        img.mkdir(parents=True, exist_ok=True)
        seg.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (48, 32), (i * 50, 80, 120)).save(img / f'town_{i}_leftImg8bit.png')
        label = np.full((32, 48), 255, np.uint8)
        label[:16] = i
        Image.fromarray(label).save(seg / f'town_{i}_gtFine_labelTrainIds.png')
    return root


def build_cityscapes(root, **kwargs):
    from mmengine.registry import DATASETS, DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(dict(type='mbn_backbones.CityscapesDataset', data_root=f'{root}/',
                                   data_prefix=dict(img_path='leftImg8bit/train',
                                                    seg_map_path='gtFine/train'),
                                   pipeline=[], **kwargs))


def label_path(root, i):
    return root / 'gtFine' / 'train' / 'town' / f'town_{i}_gtFine_labelTrainIds.png'


def test_valid_cityscapes_builds(cityscapes):
    assert len(build_cityscapes(cityscapes)) == 2


def test_label_values_outside_the_classes_are_named(cityscapes):
    label = np.full((32, 48), 3, np.uint8)
    label[0, :5] = [19, 40, 254, 255, 18]
    Image.fromarray(label).save(label_path(cityscapes, 1))
    with pytest.raises(DataError, match=r'town_1_gtFine_labelTrainIds.png: label values \[19, 40, 254\] '
                                        r'are outside the classes 0..18 and ignore_index 255'):
        build_cityscapes(cityscapes)


def test_colour_label_map_is_refused_with_the_converter_named(cityscapes):
    Image.new('RGB', (48, 32), (128, 64, 128)).save(label_path(cityscapes, 0))
    with pytest.raises(DataError, match=r'town_0_gtFine_labelTrainIds.png: label map has mode RGB '
                                        r'\(3 channels\).*camvid.py'):
        build_cityscapes(cityscapes)


def test_label_map_of_another_size_is_named(cityscapes):
    Image.fromarray(np.zeros((16, 48), np.uint8)).save(label_path(cityscapes, 0))
    with pytest.raises(DataError, match=r'label map is 48x16, its image is 48x32'):
        build_cityscapes(cityscapes)


def test_missing_label_file_is_named(cityscapes):
    label_path(cityscapes, 1).unlink()
    with pytest.raises(DataError, match=r'town_1_gtFine_labelTrainIds.png: label file not found'):
        build_cityscapes(cityscapes)


def test_wrong_image_suffix_finds_nothing_and_says_so(cityscapes):
    with pytest.raises(DataError, match=r"no file in .*leftImg8bit/train ends with '_leftImg8bit.jpg' "
                                        r'\(found e.g. town_0_leftImg8bit.png'):
        build_cityscapes(cityscapes, img_suffix='_leftImg8bit.jpg')


def test_missing_image_folder_is_named(cityscapes):
    shutil.rmtree(cityscapes / 'leftImg8bit')
    with pytest.raises(DataError, match=r'image folder .*leftImg8bit/train does not exist'):
        build_cityscapes(cityscapes)
