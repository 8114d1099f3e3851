"""tools/train.py, tools/test.py and the torchrun wrappers, run as a user would.

They run a tiny mmengine project (a linear regressor, its dataset and metric,
written to a temporary folder) so that these tests check the tools, not a
model; the detection and segmentation configs have their own tests.
"""
import importlib.util
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / 'tools'

TOY_MODULE = '''
"""A regressor small enough to train in a test: y = sum(x) from 4 inputs."""
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from torch.utils.data import Dataset


@DATASETS.register_module()
class MbnToyDataset(Dataset):
    metainfo = dict(classes=('value',))

    def __init__(self, size=16):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        x = torch.randn(4, generator=torch.Generator().manual_seed(index))
        return dict(inputs=x, targets=x.sum(0, keepdim=True))


@MODELS.register_module()
class MbnToyRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=torch.nn.functional.mse_loss(pred, targets))
        if mode == 'predict':
            return [dict(pred=p, target=t) for p, t in zip(pred, targets)]
        return pred


@METRICS.register_module()
class MbnToyMAE(BaseMetric):
    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results.extend(float((s['pred'] - s['target']).abs()) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mae=sum(results) / len(results))
'''

TOY_CONFIG = '''
custom_imports = dict(imports=['mbn_toy', 'mbn_backbones'], allow_failed_imports=False)
# mmengine's own Runner cannot resume its checkpoints under torch >= 2.6
runner_type = 'mbn_backbones.Runner'
model = dict(type='MbnToyRegressor')
_loader = dict(batch_size=2, num_workers=0, collate_fn=dict(type='default_collate'))
train_dataloader = dict(_loader, sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='MbnToyDataset', size=16))
test_dataloader = dict(_loader, sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='MbnToyDataset', size=6))
test_evaluator = dict(type='MbnToyMAE')
test_cfg = dict()
train_cfg = dict(by_epoch=False, max_iters=2)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
default_hooks = dict(checkpoint=dict(type='mbn_backbones.CheckpointHook', interval=2,
                                     by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
# As in OpenMMLab configs; the tools switch to gloo without CUDA.
env_cfg = dict(dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
'''


@pytest.fixture(scope='module')
def toy_project(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_project')
    (root / 'mbn_toy.py').write_text(textwrap.dedent(TOY_MODULE))
    (root / 'toy_config.py').write_text(textwrap.dedent(TOY_CONFIG))
    return root


def run_tool(args, cwd, project, timeout=120, **env):
    # this checkout's mbn_backbones, whatever the environment has installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(project), str(TOOLS.parent)]),
               OMP_NUM_THREADS='1', **env)
    start = time.monotonic()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{args} exited with {proc.returncode} after ' \
        f'{time.monotonic() - start:.0f}s:\n{out[-6000:]}'
    return out


def python_tool(name, *args):
    return [sys.executable, str(TOOLS / name), *map(str, args)]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def trained(toy_project, tmp_path_factory):
    """Two iterations of train.py with no --work-dir, run from a scratch folder."""
    cwd = tmp_path_factory.mktemp('train_cwd')
    out = run_tool(python_tool('train.py', toy_project / 'toy_config.py'), cwd, toy_project)
    return cwd / 'work_dirs' / 'toy_config', out


def test_train_writes_checkpoint_in_default_work_dir(trained):
    work_dir, out = trained
    assert (work_dir / 'iter_2.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    assert re.search(r'Iter\(train\) \[2/2\].*loss:', out)


def test_train_resume_auto_continues_from_latest(trained, toy_project, tmp_path):
    work_dir = tmp_path / 'work'
    shutil.copytree(trained[0], work_dir)
    # last_checkpoint holds an absolute path into the original work dir.
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    out = run_tool(python_tool('train.py', toy_project / 'toy_config.py', '--work-dir', work_dir,
                               '--resume', '--cfg-options', 'train_cfg.max_iters=4',
                               'default_hooks.checkpoint.interval=4'),
                   tmp_path, toy_project)
    assert 'resumed epoch: 0, iter: 2' in out
    assert 'Iter(train) [1/4]' not in out and 'Iter(train) [3/4]' in out
    assert (work_dir / 'iter_4.pth').is_file()


def test_train_resume_from_given_checkpoint(trained, toy_project, tmp_path):
    checkpoint = trained[0] / 'iter_2.pth'
    out = run_tool(python_tool('train.py', toy_project / 'toy_config.py', '--work-dir',
                               tmp_path / 'work', '--resume', checkpoint,
                               '--cfg-options', 'train_cfg.max_iters=3',
                               'default_hooks.checkpoint.interval=3'),
                   tmp_path, toy_project)
    assert f'Load checkpoint from {checkpoint}' in out
    assert 'resumed epoch: 0, iter: 2' in out
    assert (tmp_path / 'work' / 'iter_3.pth').is_file()


def test_test_evaluates_checkpoint_and_dumps_predictions(trained, toy_project, tmp_path):
    checkpoint = trained[0] / 'iter_2.pth'
    preds = tmp_path / 'preds.pkl'
    out = run_tool(python_tool('test.py', toy_project / 'toy_config.py', checkpoint,
                               '--work-dir', tmp_path / 'work', '--out', preds),
                   tmp_path, toy_project)
    assert f'Load checkpoint from {checkpoint}' in out
    assert re.search(r'Iter\(test\) \[3/3\].*toy/mae: \d', out)
    with open(preds, 'rb') as f:
        assert len(pickle.load(f)) == 6


@pytest.mark.parametrize('tool', ['train.py', 'test.py', 'dist_train.sh', 'dist_test.sh'])
def test_tool_help(tool, toy_project, tmp_path):
    command = python_tool(tool, '--help') if tool.endswith('.py') else \
        ['bash', str(TOOLS / tool), '--help']
    out = run_tool(command, tmp_path, toy_project, timeout=60)
    options = {'train.py': ['--work-dir', '--resume', '--amp', '--cfg-options', '--launcher'],
               'test.py': ['--work-dir', '--out', '--show-dir', '--cfg-options', '--launcher'],
               'dist_train.sh': ['CONFIG GPUS', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT'],
               'dist_test.sh': ['CONFIG CHECKPOINT GPUS', 'NNODES', 'PORT']}[tool]
    for option in options:
        assert option in out, f'{tool} --help does not mention {option}:\n{out}'


def test_test_rejects_out_that_is_not_a_pickle(toy_project, tmp_path):
    proc = subprocess.run(python_tool('test.py', toy_project / 'toy_config.py', 'x.pth',
                                      '--out', 'preds.json'),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert '--out must end with .pkl or .pickle' in proc.stderr


def test_dist_train_two_cpu_processes_with_gloo(toy_project, tmp_path):
    work_dir = tmp_path / 'work'
    command = ['bash', str(TOOLS / 'dist_train.sh'), str(toy_project / 'toy_config.py'), '2',
               '--work-dir', str(work_dir)]
    out = run_tool(command, tmp_path, toy_project, timeout=180, PORT=str(free_port()))
    assert out.count('nccl -> gloo') == 2  # one line per process
    assert 'Distributed training: True' in out and 'GPU number: 2' in out
    assert 'Iter(train) [2/2]' in out
    assert (work_dir / 'iter_2.pth').is_file()


def test_dist_test_two_cpu_processes_collects_all_predictions(trained, toy_project, tmp_path):
    preds = tmp_path / 'preds.pkl'
    command = ['bash', str(TOOLS / 'dist_test.sh'), str(toy_project / 'toy_config.py'),
               str(trained[0] / 'iter_2.pth'), '2', '--work-dir', str(tmp_path / 'work'),
               '--out', str(preds)]
    out = run_tool(command, tmp_path, toy_project, timeout=180, PORT=str(free_port()))
    assert out.count('nccl -> gloo') == 2
    # 6 samples over 2 ranks, batch 2: 2 iterations each, all 6 results gathered.
    assert re.search(r'Iter\(test\) \[2/2\].*toy/mae: \d', out)
    with open(preds, 'rb') as f:
        assert len(pickle.load(f)) == 6


@pytest.fixture
def toy_importable(toy_project, monkeypatch):
    """The toy project importable here, as the config's custom_imports need."""
    monkeypatch.syspath_prepend(str(toy_project))
    return toy_project


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'mbn_tool_{name}', TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('argv, resume, load_from', [
    ([], False, None),
    (['--resume'], True, None),
    (['--resume', 'auto'], True, None),
    (['--resume', 'some/iter_8.pth'], True, 'some/iter_8.pth'),
])
def test_train_resume_argument(argv, resume, load_from, toy_importable):
    train = load_tool('train')
    cfg = train.build_cfg(train.parse_args([str(toy_importable / 'toy_config.py'), *argv]))
    assert cfg.get('resume', False) == resume
    assert cfg.get('load_from') == load_from


def test_train_options_reach_the_config(toy_importable, tmp_path):
    train = load_tool('train')
    cfg = train.build_cfg(train.parse_args([
        str(toy_importable / 'toy_config.py'), '--amp', '--work-dir', str(tmp_path),
        '--cfg-options', 'train_cfg.max_iters=7', 'optim_wrapper.optimizer.lr=0.5']))
    assert cfg.work_dir == str(tmp_path)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.train_cfg.max_iters == 7 and cfg.optim_wrapper.optimizer.lr == 0.5
    assert cfg.launcher == 'none'


def test_show_dir_needs_a_visualization_hook(toy_importable):
    test = load_tool('test')
    args = test.parse_args([str(toy_importable / 'toy_config.py'), 'x.pth', '--show-dir', 'vis'])
    with pytest.raises(SystemExit, match='--show-dir needs an mmdet or mmseg config'):
        test.build_cfg(args)
