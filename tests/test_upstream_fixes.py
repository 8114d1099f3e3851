"""The fixes for upstream defects are components a config names; importing changes nothing.

Each defect is shown twice: mmdet's or mmengine's own component still fails
(so these tests notice when upstream fixes it), ours works on the same real
path.
"""
import ast
import copy
import itertools
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.model import BaseModel
from mmengine.runner import Runner as MMEngineRunner
from torch.utils.data import Dataset

import mbn_backbones  # noqa: F401  registers our scope
from mbn_backbones import upstream
from mbn_backbones.engine import (CheckpointHook, Runner, mmengine_checkpoint_globals,
                                  read_checkpoint)
from mbn_backbones.engine.launch import adapt_to_cpu_distributed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def keep_default_scope():
    """Runners built here make their default scope current; later test files get theirs back."""
    from mmengine.registry import DefaultScope
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved

# ---------------------------------------------------------------------------
# importing mbn_backbones changes nothing upstream

IMPORT_PROBE = '''
import importlib, inspect, sys
import torch, torch.serialization

MODULES = ['torch', 'torch.serialization', 'mmengine.runner', 'mmengine.runner.runner',
           'mmengine.runner.checkpoint', 'mmengine.hooks', 'mmengine.hooks.checkpoint_hook',
           'mmengine.logging.history_buffer', 'mmdet.models.dense_heads',
           'mmdet.models.dense_heads.ssd_head', 'mmdet.models.dense_heads.anchor_head',
           'mmseg.models.decode_heads']
modules = [importlib.import_module(m) for m in MODULES]

def snapshot():
    """Every attribute of those modules and of their classes, by identity."""
    found = {}
    for module in modules:
        for name, value in list(vars(module).items()):
            found[f'{module.__name__}.{name}'] = value
            if inspect.isclass(value):
                for attr, member in list(vars(value).items()):
                    found[f'{module.__name__}.{name}.{attr}'] = member
    from mmengine.runner.checkpoint import CheckpointLoader
    from mmengine.logging import HistoryBuffer
    for prefix, loader in CheckpointLoader._schemes.items():
        found[f'CheckpointLoader._schemes[{prefix!r}]'] = loader
    for name, method in HistoryBuffer._statistics_methods.items():
        found[f'HistoryBuffer._statistics_methods[{name!r}]'] = method
    for i, entry in enumerate(torch.serialization.get_safe_globals()):
        found[f'safe_globals[{i}]'] = entry
    return found

before = snapshot()
import mbn_backbones  # noqa: E402
after = snapshot()
# Importing more submodules sets them on their packages; that is no change.
changed = sorted(k for k in before if k not in after or after[k] is not before[k])
added = sorted(k for k in after if k not in before and not inspect.ismodule(after[k]))
print('checked', len(before))
print('changed', changed)
print('added', added)
'''


SAFE_GLOBALS_PROBE = """
import torch
{first}
before = set(torch.serialization.get_safe_globals())
{then}
added = set(torch.serialization.get_safe_globals()) - before
print(sorted(f'{{g.__module__}}.{{g.__qualname__}}' for g in added))
"""
# what tools/train.py and mmdet's/mmseg's own tools have loaded before a
# config's custom_imports bring us in
UPSTREAM_IMPORTS = 'import mmengine.runner, mmdet.models, mmdet.evaluation, mmseg.models'


def added_safe_globals(first: str, then: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, '-c', SAFE_GLOBALS_PROBE.format(first=first, then=then)], cwd=REPO,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_import_adds_no_safe_global_of_its_own():
    """After the upstream packages are loaded, importing ours adds nothing to
    torch's allowlist. In a bare process the only new entries are the ones
    those upstream imports add by themselves: torch registers its own
    DTensor/DeviceMesh classes when mmengine's model and runner modules load
    ``torch.distributed.tensor`` and ``torch._dynamo``."""
    assert added_safe_globals(UPSTREAM_IMPORTS, 'import mbn_backbones') == []
    by_upstream = added_safe_globals('', UPSTREAM_IMPORTS)
    assert set(added_safe_globals('', 'import mbn_backbones')) <= set(by_upstream)
    assert all(name.startswith('torch.') for name in by_upstream), by_upstream


def test_import_changes_no_attribute_of_mmdet_mmseg_mmengine_or_torch():
    proc = subprocess.run([sys.executable, '-c', IMPORT_PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(' ', 1) for line in proc.stdout.splitlines())
    assert int(lines['checked']) > 1000  # the probe saw the classes it means to watch
    assert lines['changed'] == '[]'
    assert lines['added'] == '[]'


def test_the_probe_notices_a_patch():
    """The probe above, with a patch of the kind compat.py used to apply."""
    probe = IMPORT_PROBE.replace(
        'import mbn_backbones  # noqa: E402',
        'import mbn_backbones\n'
        'from mmdet.models.dense_heads import SSDHead\n'
        'SSDHead.__init__ = lambda self, *a, **k: None\n'
        'torch.serialization.add_safe_globals([print])\n')
    proc = subprocess.run([sys.executable, '-c', probe], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    lines = dict(line.split(' ', 1) for line in proc.stdout.splitlines())
    assert 'mmdet.models.dense_heads.SSDHead.__init__' in lines['changed']
    assert 'safe_globals[' in lines['added']  # one more entry than before


# ---------------------------------------------------------------------------
# mmdet 3.3.0: SSDHead cannot predict ('SSDHead' object has no attribute 'loss_cls')

MMDET_SSDLITE = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'
SSD_CONFIGS = {
    'mmdet_ssdlite_with_our_ssd_head': (MMDET_SSDLITE, 320),
    'ssd300_mobilenetv2': (REPO / 'configs/ssd/ssd300_mobilenetv2_8xb8-120e_coco.py', 300),
    'ssdlite_mobilenetv3_large': (
        REPO / 'configs/ssdlite/ssdlite_mobilenetv3-large_8xb24-600e_coco.py', 320),
}


def build_detector(config, num_classes=3, head_type=None, seed=0):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope

    cfg = get_config(config) if str(config).startswith('mmdet::') else Config.fromfile(config)
    cfg.model.bbox_head.num_classes = num_classes
    if head_type is not None:
        cfg.model.bbox_head.type = head_type
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():  # spread the scores and boxes, so that each is told apart
        gen = torch.Generator().manual_seed(seed)
        for m in model.bbox_head.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.05)
    return model.eval()


def ssd_batch(size):
    from mmdet.structures import DetDataSample
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    meta = dict(img_shape=(size, size), ori_shape=(size, size),
                scale_factor=(1.0, 1.0), pad_shape=(size, size))
    return dict(inputs=[image], data_samples=[DetDataSample(metainfo=meta)])


def decode_by_hand(priors, deltas, size, stds=(0.1, 0.1, 0.2, 0.2)):
    """SSD's box decoding (SSD paper, eq. 2, with its variances), clipped to the image."""
    d = deltas * torch.tensor(stds)
    centre = (priors[:, :2] + priors[:, 2:]) / 2
    extent = priors[:, 2:] - priors[:, :2]
    limit = abs(np.log(16 / 1000))  # mmdet's wh_ratio_clip
    xy = centre + extent * d[:, :2]
    wh = extent * d[:, 2:].clamp(-limit, limit).exp()
    return torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(0, size)


def test_mmdet_ssd_head_still_cannot_predict():
    model = build_detector(MMDET_SSDLITE)
    assert type(model.bbox_head).__module__.startswith('mmdet.')
    with pytest.raises(AttributeError, match="'SSDHead' object has no attribute 'loss_cls'"):
        with torch.no_grad():
            model.test_step(ssd_batch(320))


@pytest.mark.parametrize('config, size', SSD_CONFIGS.values(), ids=SSD_CONFIGS)
def test_our_ssd_heads_predict_softmax_scores_and_decoded_boxes(config, size):
    head_type = 'mbn_backbones.SSDHead' if 'mmdet::' in str(config) else None
    model = build_detector(config, num_classes=3, head_type=head_type)
    head = model.bbox_head
    assert type(head).__module__.startswith('mbn_backbones.') and head.loss_cls is None
    batch = ssd_batch(size)
    with torch.no_grad():
        (result,) = model.test_step(batch)
        inputs = model.data_preprocessor(batch, False)['inputs']
        cls_scores, bbox_preds = head(model.extract_feat(inputs))
    priors = torch.cat(head.prior_generator.grid_priors([c.shape[-2:] for c in cls_scores],
                                                         device='cpu'))
    logits = torch.cat([c[0].permute(1, 2, 0).reshape(-1, 4) for c in cls_scores])
    deltas = torch.cat([b[0].permute(1, 2, 0).reshape(-1, 4) for b in bbox_preds])
    scores = logits.softmax(-1)[:, :3]  # background is the last of num_classes + 1
    boxes = decode_by_hand(priors, deltas, size)

    pred = result.pred_instances
    assert 0 < len(pred) <= head.test_cfg.max_per_img
    # NMS always keeps the best-scoring box
    assert abs(pred.scores.max().item() - scores.max().item()) < 1e-5
    matched = set()
    for box, score, label in zip(pred.bboxes, pred.scores, pred.labels):
        error = (scores[:, label] - score).abs() + (boxes - box).abs().max(1).values / size
        prior = int(error.argmin())
        assert error[prior] < 1e-5, (box, score, label)
        matched.add((prior, int(label)))
    assert len(matched) == len(pred)


def test_our_ssd_head_has_mmdets_parameters():
    ours = build_detector(MMDET_SSDLITE, head_type='mbn_backbones.SSDHead')
    theirs = build_detector(MMDET_SSDLITE)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)


# ---------------------------------------------------------------------------
# mmengine 0.10.7 under torch >= 2.6: a Runner cannot load its own checkpoints

class ToyDataset(Dataset):
    """Eight samples of y = sum(x); ``metainfo`` ends up in the checkpoint's meta."""
    metainfo = dict(classes=('low', 'high'), palette=[(0, 0, 0), (255, 255, 255)])

    def __len__(self):
        return 8

    def __getitem__(self, index):
        x = torch.randn(4, generator=torch.Generator().manual_seed(index))
        return dict(inputs=x, targets=x.sum(0, keepdim=True))


class ToyRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.norm = torch.nn.BatchNorm1d(4)  # a buffer (num_batches_tracked) in the state dict

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.linear(self.norm(inputs))
        if mode == 'loss':
            return dict(loss=torch.nn.functional.mse_loss(pred, targets))
        if mode == 'predict':
            return [dict(error=(p - t).abs()) for p, t in zip(pred, targets)]
        return pred


class ToyMetric(BaseMetric):
    """Returns a numpy scalar, as mmseg's IoUMetric does; save_best keeps it."""
    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results.extend(float(s['error']) for s in data_samples)

    def compute_metrics(self, results):
        return dict(score=np.float64(-np.mean(results)))


OPTIMIZERS = {
    'sgd': dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    'adamw': dict(type='AdamW', lr=1e-3, weight_decay=0.05),
}


RUN_NUMBER = itertools.count()


def toy_runner(work_dir, optimizer, max_iters, runner=Runner, hook='mbn_backbones.CheckpointHook',
               **kwargs):
    loader = dict(batch_size=4, num_workers=0, dataset=ToyDataset(),
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    torch.manual_seed(0)
    return runner(
        model=ToyRegressor(),
        work_dir=str(work_dir),
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=Evaluator(ToyMetric()),
        val_cfg=dict(),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=2),
        optim_wrapper=dict(optimizer=OPTIMIZERS[optimizer]),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1),
            dict(type='MultiStepLR', milestones=[2], by_epoch=False),
        ],
        default_hooks=dict(
            checkpoint=dict(type=hook, interval=2, by_epoch=False,
                            save_best='toy/score', rule='greater'),
            logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        default_scope='mmengine',
        experiment_name=f'mbn_upstream_fixes_{next(RUN_NUMBER)}',  # a fresh message hub
        **kwargs)


@pytest.fixture(scope='module', params=sorted(OPTIMIZERS))
def toy_checkpoint(request, tmp_path_factory):
    """A checkpoint saved by our Runner after 2 iterations (and a validation)."""
    work_dir = tmp_path_factory.mktemp(f'runner_{request.param}')
    toy_runner(work_dir, request.param, max_iters=2).train()
    checkpoint = work_dir / 'iter_2.pth'
    assert checkpoint.is_file()
    return request.param, checkpoint


def entry_name(entry):
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


def test_checkpoint_loads_with_weights_only_and_the_allowlist_is_put_back(toy_checkpoint):
    _, checkpoint = toy_checkpoint
    # torch keeps the allowlist in a set: compare contents, not iteration order
    before = set(torch.serialization.get_safe_globals())
    loaded = read_checkpoint(checkpoint)
    assert set(loaded) == {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'}
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(checkpoint)  # outside our loads torch's default stands


@pytest.mark.parametrize('entry', mmengine_checkpoint_globals(), ids=entry_name)
def test_every_allowed_global_is_needed(entry, toy_checkpoint):
    _, checkpoint = toy_checkpoint
    others = [g for g in mmengine_checkpoint_globals() if g != entry]
    with torch.serialization.safe_globals(others):
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            torch.load(checkpoint)


def test_mmengine_runner_still_cannot_resume_its_own_checkpoint(toy_checkpoint, tmp_path):
    optimizer, _ = toy_checkpoint
    part = tmp_path / 'part'
    toy_runner(part, optimizer, max_iters=2, runner=MMEngineRunner, hook='CheckpointHook').train()
    runner = toy_runner(tmp_path / 'resumed', optimizer, max_iters=3, runner=MMEngineRunner,
                        hook='CheckpointHook', resume=True, load_from=str(part / 'iter_2.pth'))
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        runner.train()


def test_our_runner_resumes_from_checkpoint(toy_checkpoint, tmp_path):
    optimizer, checkpoint = toy_checkpoint
    saved = read_checkpoint(checkpoint)
    runner = toy_runner(tmp_path, optimizer, max_iters=3, resume=True, load_from=str(checkpoint))
    runner.train()
    assert runner.iter == 3
    # The message hub came back too: three losses, two of them from before.
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 3
    np.testing.assert_allclose(
        losses[:2], saved['message_hub']['log_scalars']['train/loss'].data[0])
    assert saved['meta']['dataset_meta'] == ToyDataset.metainfo
    assert isinstance(runner.message_hub.get_info('best_score'), np.floating)


def test_our_checkpoint_holds_what_mmengines_holds(tmp_path):
    """Same run with mmengine's Runner and hook and with ours: same checkpoint contents."""
    toy_runner(tmp_path / 'theirs', 'sgd', max_iters=2, runner=MMEngineRunner,
               hook='CheckpointHook').train()
    toy_runner(tmp_path / 'ours', 'sgd', max_iters=2).train()
    for name in ('iter_2.pth', 'best_toy_score_iter_2.pth'):
        theirs, ours = (read_checkpoint(tmp_path / w / name) for w in ('theirs', 'ours'))
        assert ours.keys() == theirs.keys()
        assert ours['meta'].keys() == theirs['meta'].keys()
        for key in ('epoch', 'iter', 'seed', 'dataset_meta', 'mmengine_version'):
            assert ours['meta'][key] == theirs['meta'][key], key
        for key, value in theirs['state_dict'].items():
            assert torch.equal(ours['state_dict'][key], value), key
        assert ours['message_hub'].keys() == theirs['message_hub'].keys()
        assert ours['message_hub']['runtime_info'].keys() == \
            theirs['message_hub']['runtime_info'].keys()
        if 'optimizer' in theirs:
            assert repr(ours['optimizer']) == repr(theirs['optimizer'])
            assert ours['param_schedulers'] == theirs['param_schedulers']


def test_runner_loads_what_load_from_names(toy_checkpoint, tmp_path):
    optimizer, checkpoint = toy_checkpoint
    runner = toy_runner(tmp_path, optimizer, max_iters=2, load_from=str(checkpoint))
    runner.load_or_resume()
    weight = read_checkpoint(checkpoint)['state_dict']['linear.weight']
    assert torch.equal(runner.model.linear.weight, weight)


_unpickled = []


def _record(message):
    _unpickled.append(message)


class Payload:
    """Runs code when unpickled, as a malicious checkpoint would."""

    def __reduce__(self):
        return _record, ('code ran while loading',)


class AttributeProbe:
    """Unpickles to an attribute that is not a HistoryBuffer statistic."""

    def __reduce__(self):
        return getattr, (torch.Tensor, 'new_empty')


@pytest.mark.parametrize('payload', [Payload(), AttributeProbe()], ids=type)
def test_runner_refuses_other_globals_naming_the_file(payload, tmp_path):
    checkpoint = tmp_path / 'payload.pth'
    torch.save(dict(state_dict={}, meta=dict(payload=payload)), checkpoint)
    runner = toy_runner(tmp_path / 'work', 'sgd', max_iters=1, load_from=str(checkpoint))
    with pytest.raises(pickle.UnpicklingError, match=rf'refused to load checkpoint {checkpoint}'):
        runner.load_or_resume()
    assert _unpickled == []


def test_resume_does_not_execute_the_config_text_of_a_checkpoint(toy_checkpoint, tmp_path, caplog):
    optimizer, checkpoint = toy_checkpoint
    marker = tmp_path / 'config_ran'
    crafted = read_checkpoint(checkpoint)
    # mmengine 0.10.7's resume hands this to Config.fromstring, which runs it.
    crafted['meta']['config'] = f'import pathlib\npathlib.Path({str(marker)!r}).touch()\n'
    torch.save(crafted, tmp_path / 'iter_2.pth')
    runner = toy_runner(tmp_path / 'work', optimizer, max_iters=3, resume=True,
                        load_from=str(tmp_path / 'iter_2.pth'))
    runner.logger.addHandler(caplog.handler)  # MMLogger does not propagate
    try:
        runner.train()
    finally:
        runner.logger.removeHandler(caplog.handler)
    assert not marker.exists()
    assert runner.iter == 3
    warned = [r.getMessage() for r in caplog.records if "meta['config']" in r.getMessage()]
    assert len(warned) == 1 and 'was not executed' in warned[0]


# ---------------------------------------------------------------------------
# each component says which upstream release it was written for

@pytest.mark.parametrize('build, package, needle', [
    (lambda: CheckpointHook(interval=1), 'mmengine', 'CheckpointHook._save_checkpoint_with_step'),
    (lambda: build_detector(MMDET_SSDLITE, head_type='mbn_backbones.SSDHead'), 'mmdet',
     "mmdet's SSDHead still lacks loss_cls"),
], ids=['checkpoint_hook', 'ssd_head'])
def test_components_warn_once_on_another_upstream_release(build, package, needle, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        build()
    assert not [w for w in caught if w.category is upstream.UpstreamVersionWarning]

    monkeypatch.setattr(upstream, 'version', lambda name: '99.0' if name == package else '0')
    monkeypatch.setattr(upstream, '_warned', set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        build()
        build()
    messages = [str(w.message) for w in caught if w.category is upstream.UpstreamVersionWarning]
    assert len(messages) == 1
    assert f'for {package} ' in messages[0] and 'found 99.0: verify' in messages[0]
    assert needle in messages[0] and '\n' not in messages[0]


def test_runner_warns_on_another_mmengine_release(monkeypatch, tmp_path):
    monkeypatch.setattr(upstream, 'version', lambda name: '99.0')
    monkeypatch.setattr(upstream, '_warned', set())
    with pytest.warns(upstream.UpstreamVersionWarning,
                      match=r'mbn_backbones.Runner was written for mmengine 0.10.7, found 99.0: '
                            r'verify that Runner.save_checkpoint'):
        toy_runner(tmp_path, 'sgd', max_iters=1)


# ---------------------------------------------------------------------------
# configs name the components

CONFIGS = sorted(p for p in (REPO / 'configs').glob('*/*.py') if p.parent.name != '_base_')


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: p.stem)
def test_every_config_names_our_runner_and_checkpoint_hook(config):
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    assert cfg.runner_type == 'mbn_backbones.Runner'
    assert cfg.default_hooks.checkpoint.type == 'mbn_backbones.CheckpointHook'
    if config.parent.name == 'ssd':
        assert cfg.model.bbox_head.type == 'mbn_backbones.SSDHead'


def test_runner_type_builds_our_runner_through_mmengines_registry(tmp_path):
    from mmengine.registry import RUNNERS
    cfg = dict(runner_type='mbn_backbones.Runner', work_dir=str(tmp_path),
               model=dict(type='mbn_backbones.MobileNetV3', arch='small'),
               default_scope='mmengine', experiment_name='runner_type_builds')
    assert type(RUNNERS.build(cfg)) is Runner


# ---------------------------------------------------------------------------
# mmengine 0.10.7 assumes CUDA for distributed runs (a config rewrite of our tools)

def test_cpu_distributed_switches_nccl_to_gloo(monkeypatch):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    notes = adapt_to_cpu_distributed(cfg, 'slurm')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert any('nccl -> gloo' in note for note in notes)


def test_cpu_distributed_fills_in_a_missing_env_cfg(monkeypatch):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                             find_unused_parameters=True)))
    adapt_to_cpu_distributed(cfg, 'slurm')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.find_unused_parameters


def test_cpu_distributed_leaves_single_process_and_gloo_alone(monkeypatch):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl')), sync_bn='torch'))
    assert adapt_to_cpu_distributed(cfg, 'none') == []
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and cfg.sync_bn == 'torch'
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='gloo'))))
    notes = adapt_to_cpu_distributed(cfg, 'mpi')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert not any('gloo' in note for note in notes)


def test_cpu_distributed_drops_sync_bn_of_the_lraspp_configs(monkeypatch):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config.fromfile(REPO / 'configs/lraspp/lraspp_mobilenetv3-large_synthetic.py')
    assert cfg.sync_bn == 'torch'
    notes = adapt_to_cpu_distributed(cfg, 'slurm')
    assert cfg.sync_bn is None
    assert any("sync_bn='torch' dropped" in note for note in notes)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config.fromfile(REPO / 'configs/lraspp/lraspp_mobilenetv3-large_synthetic.py')
    adapt_to_cpu_distributed(cfg, 'slurm')
    assert cfg.sync_bn == 'torch'


@pytest.mark.skipif(torch.cuda.is_available(), reason='the rewrite applies only without CUDA')
def test_dist_train_of_an_lraspp_config_runs_on_cpu(tmp_path):
    """tools/dist_train.sh, two processes, on the LR-ASPP config (sync_bn='torch')."""
    import os
    import socket

    from synthetic_data import SyntheticCityscapesSpec, make_synthetic_cityscapes
    root = tmp_path / 'cityscapes'
    make_synthetic_cityscapes(root, SyntheticCityscapesSpec(height=128, width=256, num_train=4,
                                                            num_val=2))
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    options = ['train_dataloader.batch_size=1', 'train_cfg.max_iters=1',
               'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1']
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.dataset.data_root={root}/',
                    f'{split}_dataloader.num_workers=0',
                    f'{split}_dataloader.persistent_workers=False']
    command = ['bash', str(REPO / 'tools/dist_train.sh'),
               str(REPO / 'configs/lraspp/lraspp_mobilenetv3-large_synthetic.py'), '2',
               '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options]
    env = dict(os.environ, PORT=str(port), OMP_NUM_THREADS='1', PYTHON=sys.executable)
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert out.count("sync_bn='torch' dropped") == 2  # one line per process
    assert 'SyncBatchNorm layers only work with GPU modules' not in out
    assert (tmp_path / 'work' / 'iter_1.pth').is_file()
