"""Regression tests for the upstream workarounds in :mod:`mbn_backbones.compat`.

Each defect is shown twice: with its workaround undone the upstream error
comes back, with it the same real mmdet/mmengine path works.
"""
import contextlib
import pickle

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import Dataset

import mbn_backbones  # noqa: F401  applies the workarounds
from mbn_backbones import compat

# ---------------------------------------------------------------------------
# mmdet 3.3.0: SSDHead cannot predict ('SSDHead' object has no attribute 'loss_cls')

SSDLITE_CONFIG = 'mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'
SSD_INPUT = 320  # the config's input size; its anchors are laid out for it


@contextlib.contextmanager
def ssd_head_unpatched():
    """Restore mmdet's own ``SSDHead.__init__`` for the duration."""
    from mmdet.models.dense_heads import SSDHead
    patched = SSDHead.__init__
    SSDHead.__init__ = patched.__wrapped__
    try:
        yield
    finally:
        SSDHead.__init__ = patched


def build_ssdlite(num_classes=3):
    """mmdet's own SSDLite (MobileNetV2) config, with fewer classes."""
    from mmdet.registry import MODELS
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope

    cfg = get_config(SSDLITE_CONFIG)
    cfg.model.bbox_head.num_classes = num_classes
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model).eval()


def ssd_batch(size=SSD_INPUT):
    from mmdet.structures import DetDataSample
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    meta = dict(img_shape=(size, size), ori_shape=(size, size),
                scale_factor=(1.0, 1.0), pad_shape=(size, size))
    return dict(inputs=[image], data_samples=[DetDataSample(metainfo=meta)])


def test_ssd_head_predict_fails_upstream_without_workaround():
    with ssd_head_unpatched():
        model = build_ssdlite()
    with pytest.raises(AttributeError, match="'SSDHead' object has no attribute 'loss_cls'"):
        with torch.no_grad():
            model.test_step(ssd_batch())


def test_ssd_head_predicts_softmax_scores_without_background():
    model = build_ssdlite(num_classes=3)
    assert model.bbox_head.loss_cls is None
    with torch.no_grad():
        (result,) = model.test_step(ssd_batch())
    pred = result.pred_instances
    assert len(pred) > 0
    assert pred.bboxes.shape == (len(pred), 4)
    # Softmax over num_classes + 1 with the background last: no background label.
    assert pred.labels.min() >= 0 and pred.labels.max() < 3
    assert ((pred.scores > 0) & (pred.scores < 1)).all()


def test_ssd_head_workaround_adds_no_state():
    with ssd_head_unpatched():
        upstream = build_ssdlite()
    patched = build_ssdlite()
    assert upstream.state_dict().keys() == patched.state_dict().keys()
    for key, value in upstream.state_dict().items():
        torch.testing.assert_close(patched.state_dict()[key], value)


def test_ssd_head_workaround_is_idempotent():
    from mmdet.models.dense_heads import SSDHead
    before = SSDHead.__init__
    compat.apply()
    compat.apply()
    assert SSDHead.__init__ is before
    assert SSDHead.__init__.__wrapped__.__module__ == 'mmdet.models.dense_heads.ssd_head'


# ---------------------------------------------------------------------------
# mmengine 0.10.7 under torch >= 2.6: Runner.resume fails ('Weights only load failed')

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


def toy_runner(work_dir, optimizer, max_iters, **kwargs):
    loader = dict(batch_size=4, num_workers=0, dataset=ToyDataset(),
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    return Runner(
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
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False,
                            save_best='toy/score', rule='greater'),
            logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False),
        default_scope='mmengine',
        experiment_name=f'{work_dir.name}_{max_iters}',
        **kwargs)


@pytest.fixture(scope='module', params=sorted(OPTIMIZERS))
def toy_checkpoint(request, tmp_path_factory):
    """A checkpoint saved by a real Runner after 2 iterations (and a validation)."""
    work_dir = tmp_path_factory.mktemp(f'runner_{request.param}')
    toy_runner(work_dir, request.param, max_iters=2).train()
    checkpoint = work_dir / 'iter_2.pth'
    assert checkpoint.is_file()
    return request.param, checkpoint


@contextlib.contextmanager
def mmengine_globals_disallowed(keep=()):
    """Take our workaround's entries, but ``keep``, out of torch's weights_only allowlist."""
    removed = set(compat.mmengine_checkpoint_globals()) - set(keep)
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals([g for g in saved if g not in removed])
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def entry_name(entry):
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


def test_checkpoint_loads_with_weights_only(toy_checkpoint):
    _, checkpoint = toy_checkpoint
    assert torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint) == []
    loaded = torch.load(checkpoint)
    assert set(loaded) == {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'}


@pytest.mark.parametrize('entry', compat.mmengine_checkpoint_globals(), ids=entry_name)
def test_every_allowed_global_is_needed(entry, toy_checkpoint):
    _, checkpoint = toy_checkpoint
    others = [g for g in compat.mmengine_checkpoint_globals() if g != entry]
    with mmengine_globals_disallowed(keep=others):
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            torch.load(checkpoint)


def test_resume_fails_upstream_without_workaround(toy_checkpoint, tmp_path):
    optimizer, checkpoint = toy_checkpoint
    runner = toy_runner(tmp_path, optimizer, max_iters=3, resume=True,
                        load_from=str(checkpoint))
    with mmengine_globals_disallowed():
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            runner.train()


def test_runner_resumes_from_checkpoint(toy_checkpoint, tmp_path):
    optimizer, checkpoint = toy_checkpoint
    saved = torch.load(checkpoint)  # weights_only, as torch defaults to
    runner = toy_runner(tmp_path, optimizer, max_iters=3, resume=True,
                        load_from=str(checkpoint))
    runner.train()
    assert runner.iter == 3
    # The message hub came back too: three losses, two of them from before.
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 3
    np.testing.assert_allclose(
        losses[:2], saved['message_hub']['log_scalars']['train/loss'].data[0])
    assert saved['meta']['dataset_meta'] == ToyDataset.metainfo
    best = runner.message_hub.get_info('best_score')
    assert isinstance(best, np.floating)


def test_load_checkpoint_loads_weights(toy_checkpoint):
    _, checkpoint = toy_checkpoint
    model = ToyRegressor()
    loaded = load_checkpoint(model, str(checkpoint), map_location='cpu')
    torch.testing.assert_close(model.linear.weight, loaded['state_dict']['linear.weight'])


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
def test_weights_only_still_refuses_other_globals(payload, tmp_path):
    checkpoint = tmp_path / 'payload.pth'
    torch.save(dict(state_dict={}, meta=dict(payload=payload)), checkpoint)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        load_checkpoint(ToyRegressor(), str(checkpoint), map_location='cpu')
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(checkpoint)
    assert _unpickled == []


def test_checkpoint_globals_are_registered_once():
    compat.apply()
    compat.apply()
    safe = torch.serialization.get_safe_globals()
    for g in compat.mmengine_checkpoint_globals():
        assert safe.count(g) == 1, entry_name(g)


# ---------------------------------------------------------------------------
# mmengine 0.10.7 assumes CUDA for distributed runs

def test_cpu_distributed_switches_nccl_to_gloo(monkeypatch):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    notes = compat.adapt_to_cpu_distributed(cfg, 'slurm')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert any('nccl -> gloo' in note for note in notes)


def test_cpu_distributed_fills_in_a_missing_env_cfg(monkeypatch):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                             find_unused_parameters=True)))
    compat.adapt_to_cpu_distributed(cfg, 'slurm')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.find_unused_parameters


def test_cpu_distributed_leaves_single_process_and_gloo_alone(monkeypatch):
    from mmengine.config import Config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert compat.adapt_to_cpu_distributed(cfg, 'none') == []
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='gloo'))))
    notes = compat.adapt_to_cpu_distributed(cfg, 'mpi')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert not any('gloo' in note for note in notes)
