"""Checkpoints by URL (docs/reliability.md, "Trust"): never unpickled with
``weights_only=False``, and checked against the SHA-256 prefix their file
names carry, as torch hub names them.

The files are served over real HTTP from a temporary folder on 127.0.0.1;
torch hub's cache is a temporary TORCH_HOME. Hostile files are built here.
"""
import contextlib
import functools
import hashlib
import importlib.util
import itertools
import logging
import pickle
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch.utils.data import Dataset

import mbn_backbones  # noqa: F401  (registers our scope)
from mbn_backbones.engine import (CheckpointHashError, ClassCountHook, Runner,
                                  load_local_checkpoint, published_hash_prefix)

REPO = Path(__file__).resolve().parents[1]
DET_CONFIG = REPO / 'configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py'


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1: ``(folder, base URL, requested paths)``."""
    for proxy in ('http_proxy', 'https_proxy', 'all_proxy'):
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.upper(), raising=False)
    root = tmp_path / 'served'
    root.mkdir()
    server = ThreadingHTTPServer(('127.0.0.1', 0),
                                 functools.partial(QuietHandler, directory=str(root)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f'http://127.0.0.1:{server.server_port}/',
                          requests=server.requests)
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def hub_checkpoints(tmp_path, monkeypatch):
    """torch hub's checkpoint cache, in a temporary TORCH_HOME."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    return tmp_path / 'torch_home' / 'hub' / 'checkpoints'


@pytest.fixture(autouse=True)
def keep_default_scope():
    """Runners built here make their default scope current; later test files get theirs back."""
    import copy

    from mmengine.registry import DefaultScope
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


def snapshot(root: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob('*')) if p.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_published(obj, folder: Path, stem: str) -> Path:
    """``obj`` saved as ``<stem>-<first 8 hex digits of its SHA-256>.pth``, as published."""
    tmp = folder / f'{stem}.unnamed'
    torch.save(obj, tmp)
    return tmp.rename(folder / f'{stem}-{sha256(tmp)[:8]}.pth')


def wrong_prefix(path: Path) -> str:
    return next(p for p in ('deadbeef', '0123abcd') if not sha256(path).startswith(p))


def hash_error(name: str, expected: str, file: Path, kept: str) -> str:
    """The whole CheckpointHashError message for ``file``, named ``name``."""
    actual = sha256(file)
    return (f"checkpoint {name} is not the file its name stands for: the name carries the "
            f"SHA-256 prefix {expected}, the file's SHA-256 starts with "
            f"{actual[:len(expected)]} ({actual}). It is damaged, incomplete or another file, "
            f"and was not loaded; {kept}")


# ---------------------------------------------------------------------------
# a toy classifier and runner

class ToyHead(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.fc_cls = torch.nn.Linear(4, num_classes)


class ToyClassifier(BaseModel):
    def __init__(self, num_classes=3, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.backbone = torch.nn.Linear(4, 4)
        self.head = ToyHead(num_classes)

    def forward(self, inputs, targets=None, mode='tensor'):
        logits = self.head.fc_cls(self.backbone(inputs))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, targets))
        return logits


class ToyData(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return dict(inputs=torch.randn(4, generator=torch.Generator().manual_seed(index)),
                    targets=torch.tensor(index % 3))


RUN_NUMBER = itertools.count()


def toy_runner(work_dir, model=None, **kwargs):
    """Our Runner, one iteration at lr=0: the weights it ends with are the ones it loaded."""
    return Runner(
        model=model or ToyClassifier(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        default_hooks=dict(checkpoint=None),
        default_scope='mmengine',
        experiment_name=f'mbn_checkpoint_urls_{next(RUN_NUMBER)}',
        **kwargs)


def toy_state(num_classes=3, seed=1):
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in ToyClassifier(num_classes).state_dict().items()}


def assert_weights(runner, state):
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def load_tool(relative):
    spec = importlib.util.spec_from_file_location(f'mbn_tool_{Path(relative).stem}',
                                                  REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------

def test_hash_prefix_is_torch_hubs_for_urls_and_eight_digits_after_the_last_dash_for_files():
    openmmlab = ('ssdlite_mobilenetv2-scratch_8xb24-600e_coco_20210629_110627-974d9307.pth')
    assert published_hash_prefix('https://download.pytorch.org/models/mobilenet_v2-b0353104.pth') \
        == 'b0353104'
    assert published_hash_prefix(f'https://download.openmmlab.com/mmdetection/v3.0/{openmmlab}') \
        == '974d9307'
    assert published_hash_prefix(f'/data/{openmmlab}') == '974d9307'
    assert published_hash_prefix('https://host/ssdlite-1a.pth?download=1') == '1a'  # as torch hub
    for unnamed in ('https://host/model.pth', '/data/ssdlite-1a.pth', '/data/epoch_12.pth',
                    '/data/model-974d9307-finetuned.pth', '/data/model-.pth'):
        assert published_hash_prefix(unnamed) is None, unnamed


def test_load_from_url_with_a_wrong_hash_prefix_is_refused_naming_both_hashes(
        served, hub_checkpoints, tmp_path):
    good = save_published(toy_state(), served.root, 'toy')
    expected = wrong_prefix(good)
    bad = good.rename(served.root / f'toy-{expected}.pth')
    url = served.url + bad.name
    before = snapshot(served.root)
    with pytest.raises(CheckpointHashError) as err:
        toy_runner(tmp_path / 'work', load_from=url).train()
    assert str(err.value) == hash_error(url, expected, bad,
                                        f'nothing was saved as {hub_checkpoints / bad.name}')
    assert snapshot(served.root) == before
    assert not hub_checkpoints.exists() or list(hub_checkpoints.iterdir()) == []


def test_load_from_url_with_its_hash_loads_from_torch_hubs_cache_which_is_checked_each_time(
        served, hub_checkpoints, tmp_path):
    state = toy_state()
    published = save_published({'state_dict': state}, served.root, 'toy')
    url = served.url + published.name
    runner = toy_runner(tmp_path / 'first', load_from=url)
    runner.train()
    assert_weights(runner, state)
    cached = hub_checkpoints / published.name
    assert cached.read_bytes() == published.read_bytes()
    assert served.requests == [f'/{published.name}']

    published.unlink()  # the cached copy is used, without a request
    second = toy_runner(tmp_path / 'second', load_from=url)
    second.train()
    assert_weights(second, state)
    assert served.requests == [f'/{published.name}']

    # torch hub and mmengine trust whatever the cache holds; we check it
    torch.save({'state_dict': toy_state(seed=2)}, cached)
    before = snapshot(hub_checkpoints)
    with pytest.raises(CheckpointHashError) as err:
        toy_runner(tmp_path / 'third', load_from=url).train()
    assert str(err.value) == hash_error(
        f'{cached} (cached copy of {url})', published.name[4:12], cached,
        'the cached copy is left as it is: delete it to download it again')
    assert snapshot(hub_checkpoints) == before


@pytest.mark.parametrize('how', ['https URL', 'torchvision:// name'])
def test_crafted_pickle_by_url_in_a_pretrained_init_cfg_is_refused_and_runs_nothing(
        served, hub_checkpoints, tmp_path, code_marker, monkeypatch, how):
    torch.save({'state_dict': {'head.fc_cls.weight': code_marker}}, served.root / 'toy.pth')
    url = served.url + 'toy.pth'
    checkpoint = url
    if how == 'torchvision:// name':  # mmengine looks the name up in its table of URLs
        from mmengine.runner import checkpoint as mmengine_checkpoint
        monkeypatch.setattr(mmengine_checkpoint, 'get_torchvision_models', lambda: {'toy': url})
        checkpoint = 'torchvision://toy'
    init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
    runner = toy_runner(tmp_path / 'work', model=ToyClassifier(init_cfg=init_cfg))
    with pytest.raises(pickle.UnpicklingError,
                       match=rf'^refused to load checkpoint {url}: it asks for posix.system,'):
        runner.train()
    assert not code_marker.path.exists()
    assert not hub_checkpoints.exists() or list(hub_checkpoints.iterdir()) == []  # not cached
    assert runner.model.init_cfg == init_cfg


def test_upstream_pretrained_url_runs_a_crafted_pickle(served, hub_checkpoints, code_marker):
    # mmengine 0.10.7's own path: PretrainedInit -> load_from_http -> torch.hub,
    # weights_only=False. The payload only creates the marker file.
    torch.save({'state_dict': {'head.fc_cls.weight': code_marker}}, served.root / 'toy.pth')
    model = ToyClassifier(init_cfg=dict(type='Pretrained', checkpoint=served.url + 'toy.pth'))
    with contextlib.suppress(Exception):  # what the payload returned is no tensor
        model.init_weights()
    assert code_marker.path.exists()
    assert (hub_checkpoints / 'toy.pth').is_file()  # and kept for the next load


def test_pretrained_init_cfg_by_url_loads_its_verified_copy(served, hub_checkpoints, tmp_path):
    state = toy_state()
    published = save_published({'state_dict': state}, served.root, 'toy')
    url = served.url + published.name
    init_cfg = dict(type='Pretrained', checkpoint=url)
    runner = toy_runner(tmp_path / 'first', model=ToyClassifier(init_cfg=init_cfg))
    runner.train()
    assert_weights(runner, state)
    assert runner.model.init_cfg == init_cfg  # the model keeps naming the URL
    cached = hub_checkpoints / published.name
    assert cached.read_bytes() == published.read_bytes()

    torch.save({'state_dict': toy_state(seed=2)}, cached)  # mmengine would load this one
    before = snapshot(hub_checkpoints)
    with pytest.raises(CheckpointHashError,
                       match=rf'^checkpoint {cached} \(cached copy of {url}\)'):
        toy_runner(tmp_path / 'second', model=ToyClassifier(init_cfg=init_cfg)).train()
    assert snapshot(hub_checkpoints) == before


def test_local_checkpoint_named_with_a_wrong_hash_is_refused_and_kept(tmp_path):
    path = save_published({'state_dict': toy_state()}, tmp_path, 'toy_20240101')
    expected = wrong_prefix(path)
    path = path.rename(tmp_path / f'toy_20240101-{expected}.pth')
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointHashError) as err:
        toy_runner(tmp_path / 'work', load_from=str(path)).train()
    assert str(err.value) == hash_error(
        path, expected, path, "the file is left as it is. If the digits after the last '-' of "
                              'its name are not a hash, rename the file')
    assert {p: v for p, v in snapshot(tmp_path).items() if p in before} == before
    # a name without 8 hex digits after its last '-' is no claim
    plain = shutil.copy(path, tmp_path / 'toy-1a.pth')
    assert set(load_local_checkpoint(plain)['state_dict']) == set(toy_state())


def test_image_demo_refuses_a_checkpoint_named_with_a_wrong_hash(tmp_path):
    from PIL import Image
    image = tmp_path / 'scene.png'
    Image.new('RGB', (160, 120), (200, 200, 200)).save(image)
    torch.save({'state_dict': {}}, tmp_path / 'det.pth')
    path = (tmp_path / 'det.pth').rename(tmp_path / f'det-{wrong_prefix(tmp_path / "det.pth")}.pth')
    demo = load_tool('tools/demo/image_demo.py')
    with pytest.raises(SystemExit, match=rf'(?s)^checkpoint {path} is not the file its name stands '
                                         r'for: .*Nothing was drawn.$'):
        demo.main([str(image), str(DET_CONFIG), str(path), '--out', str(tmp_path / 'o.png')])
    assert not (tmp_path / 'o.png').exists()


def test_test_tool_refuses_a_crafted_pickle_by_url(served, hub_checkpoints, tmp_path, code_marker):
    torch.save({'state_dict': {'backbone.conv1.weight': code_marker}}, served.root / 'det.pth')
    url = served.url + 'det.pth'
    test = load_tool('tools/test.py')
    with pytest.raises(SystemExit, match=rf'^\[test\] refused to load checkpoint {url}: it asks '
                                         r'for posix.system'):
        test.main([str(DET_CONFIG), url, '--work-dir', str(tmp_path / 'work')])
    assert not code_marker.path.exists()


def test_class_count_hook_reads_urls_without_running_them(served, hub_checkpoints, tmp_path,
                                                          code_marker):
    # a real run: the fine-tuning note names the URL of the config
    published = save_published({'state_dict': toy_state(num_classes=5)}, served.root, 'toy5')
    url = served.url + published.name
    runner = toy_runner(tmp_path / 'work', custom_hooks=[dict(type='mbn_backbones.ClassCountHook')],
                        model=ToyClassifier(init_cfg=dict(type='Pretrained', checkpoint=url)))
    said = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    runner.logger.addHandler(handler)
    try:
        runner.train()
    finally:
        runner.logger.removeHandler(handler)
    assert [m for m in said if 'trained for 5 classes' in m] == [
        f"model.init_cfg {url}: the checkpoint's head was trained for 5 classes, the model's head "
        f'is built for num_classes=3. These classification layers are not loaded and train from '
        f'random weights; everything else is loaded. Fine when fine-tuning for 3 classes; '
        f"otherwise set num_classes (and the dataset's classes) to the checkpoint's."]

    # the hook on its own (mmengine's loader for URLs unpickles with weights_only=False)
    torch.save({'state_dict': {'head.fc_cls.weight': code_marker}}, served.root / 'toy.pth')
    model = ToyClassifier(init_cfg=dict(type='Pretrained', checkpoint=served.url + 'toy.pth'))
    with pytest.raises(pickle.UnpicklingError, match='it asks for posix.system'):
        ClassCountHook().before_train(SimpleNamespace(_resume=False, _load_from=None, model=model,
                                                      logger=runner.logger))
    assert not code_marker.path.exists()


def test_a_killed_download_leaves_nothing_behind_once_it_is_stale(served, hub_checkpoints):
    import os
    import time

    from mbn_backbones.engine.checkpoint import STALE_DOWNLOAD_S, TMP_PREFIX, download_checkpoint

    published = save_published({'state_dict': toy_state()}, served.root, 'toy')
    hub_checkpoints.mkdir(parents=True)
    stale = hub_checkpoints / f'{TMP_PREFIX}{published.name}.killed'
    growing = hub_checkpoints / f'{TMP_PREFIX}{published.name}.other_process'
    other = hub_checkpoints / f'{TMP_PREFIX}another-12345678.pth.killed'
    for leftover in (stale, growing, other):
        leftover.write_bytes(b'\0' * 1024)
    old = time.time() - STALE_DOWNLOAD_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    path = download_checkpoint(served.url + published.name)
    assert Path(path).read_bytes() == published.read_bytes()
    # this file's leftover is gone; a download still being written, and other
    # files' leftovers, are not this download's to remove
    assert not stale.exists() and growing.exists() and other.exists()
