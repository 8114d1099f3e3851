"""The fine-tuning benchmarks (benchmarks/camvid_finetune.py,
coco128_finetune.py): the heads they compare are the ones they claim, short
runs on the real data write their reports, checkpoints and plots, and a run
that stopped resumes from its checkpoint. No accuracy is asserted here: a
few iterations say nothing about it (benchmarks/README.md has the runs)."""
import json
from pathlib import Path

import pytest
import torch

from mbn_backbones.registry import METRICS
from conftest import REPO_ROOT

TFLITE = REPO_ROOT.parent / 'shared' / 'weights' / 'tflite'


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / 'benchmarks'))
    import camvid_finetune
    import coco128_finetune
    import finetune
    return dict(camvid=camvid_finetune, coco=coco128_finetune, finetune=finetune)


def test_class_iou_metric_adds_each_labelled_class_to_mmsegs_metrics():
    from mmengine.registry import DefaultScope
    from mmseg.evaluation import IoUMetric

    with DefaultScope.overwrite_default_scope('mmseg'):
        from mmseg.registry import METRICS as MMSEG_METRICS
        ours = MMSEG_METRICS.build(dict(type='mbn_backbones.ClassIoUMetric',
                                        iou_metrics=['mIoU']))
    assert type(ours) is METRICS.get('ClassIoUMetric')
    theirs = IoUMetric(iou_metrics=['mIoU'])
    meta = dict(classes=('road', 'car', 'sky'))
    ours.dataset_meta = theirs.dataset_meta = meta
    # per image: intersect, union, predicted, labelled areas of each class
    results = [
        tuple(torch.tensor(v, dtype=torch.float64) for v in
              ([30, 5, 0], [40, 10, 2], [35, 7, 2], [35, 8, 0])),
        tuple(torch.tensor(v, dtype=torch.float64) for v in
              ([10, 0, 0], [20, 5, 1], [15, 5, 1], [15, 0, 0])),
    ]
    got, expected = ours.compute_metrics(results), theirs.compute_metrics(results)
    assert {k: v for k, v in got.items() if not k.startswith('IoU.')} == expected
    # road 40/60, car 5/15; sky is predicted but never labelled: 0, in the mIoU too
    assert got['IoU.road'] == pytest.approx(66.67) and got['IoU.car'] == pytest.approx(33.33)
    assert got['IoU.sky'] == 0
    assert expected['mIoU'] == pytest.approx((66.67 + 33.33 + 0) / 3, abs=0.01)
    # neither labelled nor predicted: out of both
    results = [tuple(t.clone() for t in r) for r in results]
    for r in results:
        r[1][2] = r[2][2] = 0
    got = ours.compute_metrics(results)
    assert 'IoU.sky' not in got and got['mIoU'] == pytest.approx(50.0, abs=0.01)


def test_images_per_s_is_a_full_batch_over_the_median_iteration(bench):
    images_per_s = bench['finetune'].images_per_s
    # one slow iteration (another process took the cores) does not move it
    assert images_per_s([[8, 1.0], [8, 1.2], [8, 9.0], [8, 0.8], [3, 0.5]]) == 8.0
    assert images_per_s([]) is None


@pytest.mark.parametrize('name', ['ours', 'mmseg_head', 'torchvision_head'])
def test_camvid_heads_are_the_ones_compared(bench, name):
    from mmengine.registry import DefaultScope
    from mmseg.models.decode_heads import LRASPPHead as MMSegLRASPPHead
    from mmseg.registry import MODELS
    from torchvision.models.segmentation.lraspp import LRASPPHead as TorchvisionLRASPPHead

    from mbn_backbones.models.heads import LRASPPHead

    camvid = bench['camvid']
    cfg = camvid.model_config(name, 'unused.pth', dict(type='mbn_backbones.MobileNetV3',
                                                       arch='small', padding='tf_same'))
    cfg['backbone']['init_cfg'] = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg).eval()
    head = model.decode_head
    expected = dict(ours=LRASPPHead, mmseg_head=MMSegLRASPPHead,
                    torchvision_head=TorchvisionLRASPPHead)[name]
    assert isinstance(head if name != 'torchvision_head' else head.head, expected)
    assert model.backbone.norm_eval and model.backbone.padding == 'tf_same'
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 392, 392), mode='tensor')
    stride = 2 if name == 'mmseg_head' else 8  # mmseg's head ends on the stride-2 stem
    assert logits.shape == (1, 19, 392 // stride, 392 // stride)
    if name == 'mmseg_head':
        # its 49x49 pooling window: CamVid's 360 rows are too few at output stride 8
        with pytest.raises(RuntimeError, match='too small'), torch.no_grad():
            model(torch.randn(1, 3, 360, 480), mode='tensor')
    else:
        with torch.no_grad():
            assert model(torch.randn(1, 3, 360, 480), mode='tensor').shape == (1, 19, 45, 60)


def test_coco128_mmdet_model_is_mmdets_ssdlite_with_our_backbone(bench):
    from mmdet.models.necks import SSDNeck
    from mmengine.registry import DefaultScope
    from mmdet.registry import MODELS

    from mbn_backbones.models import MobileNetV2
    from mbn_backbones.models.heads import SSDHead, SSDLiteHead

    coco = bench['coco']
    backbone = dict(type='mbn_backbones.MobileNetV2', padding='tf_same')
    with DefaultScope.overwrite_default_scope('mmdet'):
        theirs = MODELS.build(coco.model_config('mmdet_ssdlite', 'w.pth', backbone))
        ours = MODELS.build(coco.model_config('ours', 'w.pth', backbone))
    assert isinstance(theirs.backbone, MobileNetV2) and isinstance(theirs.neck, SSDNeck)
    assert type(theirs.bbox_head) is SSDHead and isinstance(ours.bbox_head, SSDLiteHead)
    assert theirs.backbone.init_cfg == dict(type='Pretrained', checkpoint='w.pth')
    assert theirs.data_preprocessor.mean.flatten().tolist() == [127.5] * 3


def test_coco128_expand_tap_ablation_changes_only_mmdets_first_level(bench):
    from mmengine.registry import DefaultScope
    from mmdet.registry import MODELS

    coco = bench['coco']
    backbone = dict(type='mbn_backbones.MobileNetV2', padding='tf_same')
    assert 'mmdet_ssdlite_expand_tap' not in coco.parse_args([]).models
    assert coco.parse_args(['--models', 'mmdet_ssdlite_expand_tap']).models == [
        'mmdet_ssdlite_expand_tap']
    theirs = coco.model_config('mmdet_ssdlite', 'w.pth', backbone)
    tapped = coco.model_config('mmdet_ssdlite_expand_tap', 'w.pth', backbone)
    ours = coco.model_config('ours', 'w.pth', backbone)
    assert tapped.backbone.out_indices == ours.backbone.out_indices == ('5.expand', 7)
    for part in ('neck', 'bbox_head'):
        differ = {k for k in theirs[part] if theirs[part][k] != tapped[part][k]}
        assert differ == ({'in_channels', 'out_channels'} if part == 'neck' else {'in_channels'})
    with DefaultScope.overwrite_default_scope('mmdet'), torch.no_grad():
        tapped.backbone.init_cfg = None
        model = MODELS.build(tapped).eval()
        features = model.extract_feat(torch.zeros(1, 3, 320, 320))
    assert [tuple(f.shape[1:]) for f in features][:3] == [(576, 20, 20), (1280, 10, 10),
                                                          (512, 5, 5)]


def _run(module, argv):
    return module.main(argv)


@pytest.mark.slow
def test_camvid_finetune_writes_report_plot_checkpoint_and_resumes(bench, camvid_root,
                                                                   tmp_path, capsys):
    tflite = TFLITE / 'mobilenet_v3_small_1.0_224_uint8.tflite'
    if not tflite.is_file():
        pytest.skip(f'{tflite} not found')
    out = tmp_path / 'camvid.json'
    argv = ['--models', 'ours_360x480', '--iters', '2', '--val-interval', '1', '--batch', '1',
            '--workers', '0', '--threads', '1', '--latency-rounds', '1', '--src', str(camvid_root),
            '--data-root', str(tmp_path / 'camvid_cs'), '--work-dir', str(tmp_path / 'work'),
            '--out', str(out)]
    report = _run(bench['camvid'], argv)
    model = report['models']['ours_360x480']
    assert json.loads(out.read_text())['models']['ours_360x480']['miou'] == model['miou']
    assert [it for it, _ in model['curve']] == [1, 2]
    # CamVid's 11 classes by their Cityscapes names (and any other class the
    # model predicted, at 0), in percent: the classes the mIoU averages
    camvid = {'road', 'sidewalk', 'building', 'fence', 'pole', 'traffic sign', 'vegetation',
              'sky', 'person', 'rider', 'car'}
    assert camvid <= set(model['class_iou'])
    assert all(0 <= v <= 100 for v in model['class_iou'].values())
    assert model['miou'] == pytest.approx(sum(model['class_iou'].values())
                                          / len(model['class_iou']), abs=0.01)
    assert model['eval_size'] == [360, 480] and model['latency_ms'] > 0
    assert Path(model['checkpoint']).is_file() and out.with_suffix('.png').is_file()
    assert 'Pretrained' in Path(model['config']).read_text()
    assert report['table'].splitlines()[2].startswith(f"| ours_360x480 | 360x480 | {model['miou']:g} |")

    # finished: reused, not trained again
    capsys.readouterr()
    again = _run(bench['camvid'], argv)
    assert 'finished earlier' in capsys.readouterr().out
    assert again['models']['ours_360x480']['miou'] == model['miou']

    # stopped after its last checkpoint: resumes from it, keeps the curve
    work = tmp_path / 'work' / 'ours_360x480'
    (work / 'result.json').unlink()
    resumed = _run(bench['camvid'], argv)
    assert 'resuming from' in capsys.readouterr().out
    assert resumed['models']['ours_360x480']['curve'] == model['curve']


@pytest.mark.slow
def test_coco128_finetune_writes_report_and_checkpoints(bench, coco128_root, tmp_path):
    tflite = TFLITE / 'mobilenet_v2_1.0_224_quant.tflite'
    if not tflite.is_file():
        pytest.skip(f'{tflite} not found')
    out = tmp_path / 'coco.json'
    report = _run(bench['coco'], [
        '--models', 'ours', 'mmdet_ssdlite', '--iters', '2', '--val-interval', '2',
        '--batch', '2', '--workers', '0', '--threads', '1', '--latency-rounds', '1',
        '--data-root', str(coco128_root), '--work-dir', str(tmp_path / 'work'),
        '--out', str(out)])
    assert set(report['models']) == {'ours', 'mmdet_ssdlite'}
    for name, model in report['models'].items():
        assert 0 <= model['bbox_mAP'] <= model['bbox_mAP_50'] <= 1
        assert [c[0] for c in model['curve']] == [2]
        assert Path(model['checkpoint']).is_file() and model['latency_ms'] > 0
    assert out.with_suffix('.png').is_file()
    # each model's logged scalars in its own folder (mmengine keeps one
    # visualizer per name in a process)
    for name in ('ours', 'mmdet_ssdlite'):
        assert list((tmp_path / 'work' / name).glob('*/vis_data/scalars.json')), name
    # the converted ImageNet backbone is made once and shared by both models
    assert [p.name for p in (tmp_path / 'work').glob('*_backbone.pth')] == [
        'mobilenet_v2_1.0_224_quant_eps0.001_backbone.pth']


def test_bad_options_are_named(bench, capsys):
    for argv, message in ((['--iters', '0'], '--iters must be >= 1, got 0'),
                          (['--lr', '-1'], '--lr must be > 0, got -1'),
                          (['--models', 'nope'], "invalid choice: 'nope'")):
        with pytest.raises(SystemExit):
            bench['camvid'].parse_args(argv)
        assert message in capsys.readouterr().err


def test_missing_weights_are_named(bench, tmp_path):
    with pytest.raises(SystemExit, match='nope.tflite not found'):
        bench['coco'].main(['--tflite', str(tmp_path / 'nope.tflite'),
                            '--work-dir', str(tmp_path / 'w'), '--out', str(tmp_path / 'o.json')])
    assert not (tmp_path / 'o.json').exists()



def test_a_run_with_other_options_goes_beside_the_old_one(bench, tmp_path, capsys):
    run_folder = bench['finetune'].run_folder
    first, other = dict(iters=150, lr=0.001), dict(iters=300, lr=0.001)
    assert run_folder(tmp_path, 'ours', first, fresh=False) == tmp_path / 'ours'
    (tmp_path / 'ours').mkdir()
    (tmp_path / 'ours' / 'signature.json').write_text(json.dumps(first))
    # ours_scratch is another model, not a run of ours
    (tmp_path / 'ours_scratch').mkdir()
    (tmp_path / 'ours_scratch' / 'signature.json').write_text(json.dumps(other))
    assert run_folder(tmp_path, 'ours', first, fresh=False) == tmp_path / 'ours'
    beside = run_folder(tmp_path, 'ours', other, fresh=False)
    assert beside.parent == tmp_path and beside.name.startswith('ours_2')
    assert 'holds a run with other options' in capsys.readouterr().out
    beside.mkdir()
    (beside / 'signature.json').write_text(json.dumps(other))
    assert run_folder(tmp_path, 'ours', other, fresh=False) == beside
    assert run_folder(tmp_path, 'ours', first, fresh=True) not in (tmp_path / 'ours', beside)
    # a finished run of an older version (no signature.json) is known by its result
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'result.json').write_text(json.dumps(dict(signature=first)))
    assert run_folder(tmp_path, 'old', first, fresh=False) == tmp_path / 'old'
