"""Every command that README.md, docs/*.md and configs/*/README.md show runs
as written, so that a doc going stale fails here.

Each documented command (code blocks in bash/shell, and inline commands in
backticks) must match exactly one entry of ``COMMANDS``: either it is run, in
a scratch folder laid out like a checkout (``configs/``, ``tools/``,
``.venv/bin/python``, ``data/``, ``my_configs/``), or it says why not
(installation and downloads need the network; ``make test`` is this suite).
What may differ from the doc, and only that: downloads become local random
weights, the datasets are tiny generated stand-ins in the documented layouts
(``data/coco`` with COCO's class names, ``data/cityscapes``), long trainings
get ``--cfg-options`` that shorten them (appended, never replacing the
documented arguments), the checkpoint names follow (``epoch_120.pth`` ->
``epoch_1.pth``), and launchers start one process instead of eight. A new
command in a doc fails ``test_every_documented_command_is_run_or_says_why``
until it gets an entry here.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md')),
        *sorted((REPO / 'configs').glob('*/README.md'))]

# --cfg-options that shorten a documented training to a step or two
ONE_EPOCH = ' --cfg-options train_cfg.max_epochs=1'
ONE_ITER = (' --cfg-options train_cfg.max_iters=1 train_cfg.val_interval=1 '
            'train_dataloader.batch_size=1')
LRASPP_CITYSCAPES = 'configs/lraspp/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
SSDLITE_COCO = 'configs/ssdlite/ssdlite_mobilenetv3-large_8xb24-600e_coco.py'
# the end of tools/test.py's loop (a detector trained for a step may find
# nothing on the tiny val split, and CocoMetric then reports no mAP)
TESTED = r'Epoch\(test\) \[\d+/\d+\]'


def normalise(command: str) -> str:
    """One line, comments dropped, ``.venv/bin/python`` and ``python`` alike."""
    command = re.sub(r'\\\n\s*', '', command).strip()
    command = re.sub(r'\s+#\s.*$', '', command)
    return re.sub(r'(^|&& |\| )(?:\.venv/bin/)?python (?=\S)', r'\1python ', command)


INLINE_COMMAND = re.compile(r'`((?:(?:\.venv/bin/)?python3? |bash tools/|tools/\S+\.sh |make '
                            r'|PYTHON=)[^`]*)`')


def documented_commands() -> list[tuple[str, str]]:
    """(doc, command) for every command line the docs show, in order."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        name = str(doc.relative_to(REPO))
        for block in re.findall(r'^```(?:bash|shell|sh|console)\n(.*?)^```', text, re.M | re.S):
            for line in re.sub(r'\\\n\s*', '', block).splitlines():
                if line.strip() and not line.strip().startswith('#'):
                    found.append((name, normalise(line)))
        prose = re.sub(r'^```.*?^```', '', text, flags=re.M | re.S)
        found += [(name, normalise(c)) for c in INLINE_COMMAND.findall(prose)]
    return found


@dataclass
class Entry:
    """How a documented command is run (or why it is not)."""
    pattern: str                      # regex, full match on the normalised command
    not_run: str = ''                 # the reason, for commands that are not run
    replace: tuple = ()               # (old, new) substitutions
    append: str = ''                  # appended arguments
    creates: tuple = ()               # files the command must have written (scratch-relative)
    removes: tuple = ()               # files the command must have deleted
    prints: str = ''                  # regex the output must match
    needs_shared: bool = False        # runs on ../shared/data, skipped without it
    matched: list = field(default_factory=list)

    def command(self, documented: str, scratch: Path) -> str:
        for old, new in self.replace:
            documented = documented.replace(old, new.format(shared=SHARED_DATA, scratch=scratch))
        return documented + self.append


NETWORK = 'installation: needs the network (tests/test_docs.py checks it against tools/setup_env.sh)'

# In the order they run: each producer before the commands that read its files.
COMMANDS = [
    # installation (docs/get_started.md)
    Entry(r'make (demo|test)', 'make test is this suite; make demo trains for minutes: its two '
          'parts run below, shortened (detection_demo.py, segmentation_demo.py)'),
    Entry(r"make test PYTEST_ARGS='[^']*'", 'this suite, on one file'),
    Entry(r'make setup', NETWORK),
    Entry(r'make distclean', 'deletes .venv and the mmcv wheel cache, which this suite runs on'),
    Entry(r'python tools/demo/run_demo\.py --only detection', 'detection_demo.py with its '
          'defaults (minutes of training): it runs below, shortened'),
    Entry(r'PYTHON=python3\.\d+ bash tools/setup_env\.sh', NETWORK),
    Entry(r'python3 -m venv \.venv|PY=\$PWD/\.venv/bin/python|MMCV_BUILD=\$\(mktemp -d\)', NETWORK),
    Entry(r'\$PY -m pip .*|tar -xzf "\$MMCV_BUILD".*|sed -i .*|\(cd "\$MMCV_BUILD".*', NETWORK),
    Entry(r'python -m pip install cityscapesscripts|CITYSCAPES_DATASET=\S+ \S*csCreateTrainIdLabelImgs',
          'needs the network and the real Cityscapes annotations'),
    Entry(r'python -c "import mbn_backbones, mmdet, mmseg; from mmcv\.ops import nms; print\(\'ok\'\)"',
          prints=r'(?m)^ok$'),

    # a first checkpoint without COCO (docs/get_started.md)
    Entry(r'python tools/demo/synthetic_data\.py coco --out data/synthetic_coco',
          append=' --num-train 8 --num-val 4',
          creates=('data/synthetic_coco/annotations/instances_val2017.json',)),
    Entry(r'python tools/train\.py configs/ssdlite/ssdlite_mobilenetv3-large_synthetic\.py',
          append=ONE_EPOCH,
          creates=('work_dirs/ssdlite_mobilenetv3-large_synthetic/epoch_1.pth',)),
    Entry(r'python tools/test\.py configs/ssdlite/ssdlite_mobilenetv3-large_synthetic\.py '
          r'work_dirs/ssdlite_mobilenetv3-large_synthetic/epoch_10\.pth',
          replace=(('epoch_10', 'epoch_1'),), prints=TESTED),
    Entry(r'python tools/demo/image_demo\.py data/synthetic_coco/val2017/\d+\.jpg '
          r'configs/ssdlite/ssdlite_mobilenetv3-large_synthetic\.py '
          r'work_dirs/ssdlite_mobilenetv3-large_synthetic/epoch_10\.pth --out (\S+)',
          replace=(('epoch_10', 'epoch_1'),), creates=('demo_out/first_detections.jpg',)),
    Entry(r'python tools/train\.py CONFIG --resume',
          replace=(('CONFIG', 'configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py'),),
          append=ONE_EPOCH, prints=r'[Rr]esumed? .*epoch_1\.pth|epoch_1\.pth'),

    # configs/ssdlite/README.md and README.md (COCO layout: tiny generated stand-in)
    Entry(rf'python tools/train\.py {re.escape(SSDLITE_COCO)}', append=ONE_EPOCH,
          creates=('work_dirs/ssdlite_mobilenetv3-large_8xb24-600e_coco/epoch_1.pth',)),
    Entry(r'tools/dist_train\.sh configs/ssdlite/(<config>|ssdlite_mobilenetv3-large_8xb24-600e_coco)'
          r'\.py 8',
          replace=((' 8', ' 1'), ('<config>', 'ssdlite_mobilenetv3-large_8xb24-600e_coco')),
          append=' --work-dir work_dirs/dist_ssdlite' + ONE_EPOCH,
          creates=('work_dirs/dist_ssdlite/epoch_1.pth',)),
    Entry(rf'python tools/test\.py {re.escape(SSDLITE_COCO)} '
          r'work_dirs/ssdlite_mobilenetv3-large_8xb24-600e_coco/epoch_120\.pth',
          replace=(('epoch_120', 'epoch_1'),), prints=TESTED),
    Entry(r'python tools/train\.py configs/ssdlite/<config>\.py --work-dir work_dirs/x',
          replace=(('<config>', 'ssdlite_mobilenetv2_8xb24-600e_coco'),), append=ONE_EPOCH,
          creates=('work_dirs/x/epoch_1.pth',)),
    Entry(r'python tools/test\.py configs/ssdlite/<config>\.py work_dirs/x/epoch_120\.pth',
          replace=(('<config>', 'ssdlite_mobilenetv2_8xb24-600e_coco'), ('epoch_120', 'epoch_1')),
          prints=TESTED),
    Entry(r'python tools/demo/detection_demo\.py',
          append=' --data-root data/demo_coco --work-dir work_dirs/detection_demo '
                 '--out-dir demo_out/detection --epochs 1 --min-map50 0 --num-images 1',
          prints=r'bbox mAP@0\.5', creates=('demo_out/detection',)),

    # configs/ssd/README.md
    Entry(r'python tools/train\.py configs/ssd/ssd300_mobilenetv2_8xb8-120e_coco\.py',
          append=ONE_EPOCH, creates=('work_dirs/ssd300_mobilenetv2_8xb8-120e_coco/epoch_1.pth',)),
    Entry(r'tools/dist_train\.sh configs/ssd/ssd300_mobilenetv2_8xb8-120e_coco\.py 8',
          replace=((' 8', ' 1'),), append=' --work-dir work_dirs/dist_ssd' + ONE_EPOCH,
          creates=('work_dirs/dist_ssd/epoch_1.pth',)),
    Entry(r'python tools/test\.py configs/ssd/ssd300_mobilenetv2_8xb8-120e_coco\.py '
          r'work_dirs/ssd300_mobilenetv2_8xb8-120e_coco/epoch_24\.pth',
          replace=(('epoch_24', 'epoch_1'),), prints=TESTED),

    # configs/lraspp/README.md (Cityscapes layout: tiny generated stand-in)
    Entry(rf'python tools/train\.py {re.escape(LRASPP_CITYSCAPES)}', append=ONE_ITER,
          creates=('work_dirs/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024/'
                   'iter_1.pth',)),
    Entry(rf'bash tools/dist_train\.sh {re.escape(LRASPP_CITYSCAPES)} 4',
          replace=((' 4', ' 1'),), append=' --work-dir work_dirs/dist_lraspp' + ONE_ITER,
          creates=('work_dirs/dist_lraspp/iter_1.pth',)),
    Entry(rf'python tools/test\.py {re.escape(LRASPP_CITYSCAPES)} work_dirs/lraspp_mobilenetv3-'
          r'large-os16_4xb4-320k_cityscapes-512x1024/iter_320000\.pth',
          replace=(('iter_320000', 'iter_1'),), prints=r'mIoU'),
    Entry(r'python tools/test\.py CONFIG CHECKPOINT --cfg-options model\.test_cfg\.mode=slide .*',
          replace=(('CONFIG', LRASPP_CITYSCAPES),
                   ('CHECKPOINT', 'work_dirs/lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-'
                    '512x1024/iter_1.pth')), prints=r'mIoU'),
    Entry(r'python tools/demo/segmentation_demo\.py',
          append=' --data-root data/synthetic_cityscapes --work-dir work_dirs/segmentation_demo '
                 '--out-dir demo_out/segmentation --iters 2 --min-miou 0 --num-images 1',
          prints=r'mIoU'),
    Entry(r'python tools/dataset_converters/camvid\.py path/to/CamVid --out data/camvid_cityscapes',
          replace=(('path/to/CamVid', '{shared}/camvid'),), needs_shared=True,
          creates=('data/camvid_cityscapes/gtFine/val',)),

    # docs/user_guide.md
    Entry(r'python -c "from torchvision\.models import (detection as d|segmentation as s); .*"', NETWORK),
    Entry(r'python tools/model_converters/torchvision_models2mbn\.py ~/\.cache/torch/hub/checkpoints/\S+ '
          r'checkpoints/\S+', "needs torchvision's published weights (network); "
          'tests/test_torchvision_models.py converts torchvision models with random weights'),
    Entry(r'python tools/test\.py configs/torchvision/\S+ checkpoints/\S+',
          'needs COCO val2017 or Pascal VOC 2012 and the converted published weights'),
    Entry(r'python tools/model_converters/tflite2mbn\.py \.\./shared/weights/tflite/\S+ checkpoints/ .*',
          'tests/test_tflite.py runs this converter on the same file (skipped without ../shared)'),
    Entry(r'python -c "import torch, torchvision; torch\.save\(torchvision\.models\.'
          r'mobilenet_v3_large\(weights=\'IMAGENET1K_V1\'\)\.state_dict\(\), '
          r'\'mobilenet_v3_large\.pth\'\)"',
          replace=(("weights='IMAGENET1K_V1'", 'weights=None'),),
          creates=('mobilenet_v3_large.pth',)),
    Entry(r'python tools/model_converters/torchvision2mbn\.py mobilenet_v3_large\.pth '
          r'checkpoints/mobilenet_v3_large_mbn\.pth',
          creates=('checkpoints/mobilenet_v3_large_mbn.pth',)),
    Entry(r'python tools/train\.py my_configs/ssdlite_v3_large_finetune\.py '
          r'--work-dir work_dirs/finetune', append=ONE_EPOCH,
          creates=('work_dirs/finetune/epoch_1.pth',)),
    Entry(r'python tools/test\.py my_configs/ssdlite_v3_large_finetune\.py '
          r'work_dirs/finetune/epoch_120\.pth', replace=(('epoch_120', 'epoch_1'),),
          prints=TESTED),
    Entry(rf'python tools/demo/image_demo\.py demo\.jpg {re.escape(SSDLITE_COCO)} '
          r'work_dirs/ssdlite_mobilenetv3-large_8xb24-600e_coco/epoch_120\.pth '
          r'--out demo_out/demo_detections\.jpg --score-thr 0\.3',
          replace=(('epoch_120', 'epoch_1'),), creates=('demo_out/demo_detections.jpg',)),
    Entry(r'python tools/deployment/pytorch2onnx\.py MobileNetV3 --model-args arch=small '
          r'--out (\S+) --fuse-bn --verify', creates=('work_dirs/onnx/mobilenetv3_small.onnx',)),
    Entry(r'python tools/deployment/pytorch2onnx\.py configs/ssdlite/\S+ --out (\S+) '
          r'--detector-output decoded --fuse-bn --verify',
          creates=('work_dirs/onnx/ssdlite_mobilenetv2.onnx',)),

    # last: docs/get_started.md's clean-up (generated datasets only)
    Entry(r'make clean', removes=('work_dirs', 'data/synthetic_coco'),
          creates=('data/coco/annotations', 'data/cityscapes/gtFine')),  # a user's data stays
]


def entry_for(command: str) -> Entry:
    matches = [e for e in COMMANDS if re.fullmatch(e.pattern, command)]
    assert len(matches) == 1, (
        f'{command!r} matches {len(matches)} entries of COMMANDS: every documented command '
        f'needs exactly one (run it, or say why not)')
    return matches[0]


def test_every_documented_command_is_run_or_says_why():
    commands = documented_commands()
    assert len(commands) > 30
    unmatched = [f'{doc}: {c}' for doc, c in commands
                 if not any(re.fullmatch(e.pattern, c) for e in COMMANDS)]
    assert not unmatched, 'documented commands no test runs:\n  ' + '\n  '.join(unmatched)
    for _, command in commands:
        entry_for(command)
    stale = [e.pattern for e in COMMANDS
             if not any(re.fullmatch(e.pattern, c) for _, c in commands)]
    assert not stale, f'entries for commands no doc shows any more: {stale}'


# ----------------------------------------------------------------- the runs

def shim(path: Path) -> None:
    """An executable that runs this interpreter, as ``.venv/bin/python`` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    path.chmod(0o755)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def user_guide_configs() -> dict[str, str]:
    """The configs the user guide tells users to save under my_configs/."""
    text = (REPO / 'docs' / 'user_guide.md').read_text()
    return dict(re.findall(r'\(`(my_configs/[\w-]+\.py)`\):\n\n```python\n(.*?)^```', text,
                           re.M | re.S))


def write_tiny_coco(root: Path, num_train: int = 3, num_val: int = 2) -> None:
    """COCO's layout and class names: a user's own ``data/coco`` in miniature
    (no generator manifest, so ``make clean`` must leave it alone)."""
    import numpy as np
    from PIL import Image

    from mmdet.datasets import CocoDataset

    # every COCO category, as the real file lists them (our checked dataset
    # refuses a config class the file does not have)
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(CocoDataset.METAINFO['classes'])]
    rng = np.random.default_rng(0)
    for split, count in (('train', num_train), ('val', num_val)):
        (root / f'{split}2017').mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            pixels = rng.integers(0, 60, (320, 320, 3), dtype=np.uint8)
            x, y, w, h = (int(v) for v in rng.integers(40, 140, 4))
            pixels[y:y + h, x:x + w] = rng.integers(150, 255, 3, dtype=np.uint8)
            Image.fromarray(pixels).save(root / f'{split}2017' / f'{i + 1:012d}.jpg')
            images.append(dict(id=i + 1, file_name=f'{i + 1:012d}.jpg', height=320, width=320))
            annotations.append(dict(id=i + 1, image_id=i + 1, category_id=i % 3 + 1, iscrowd=0,
                                    bbox=[x, y, w, h], area=w * h))
        (root / 'annotations').mkdir(exist_ok=True)
        (root / 'annotations' / f'instances_{split}2017.json').write_text(json.dumps(
            dict(images=images, annotations=annotations, categories=categories)))


def write_tiny_cityscapes(root: Path, num_train: int = 2, num_val: int = 1) -> None:
    """Cityscapes' layout with trainId label images, in miniature."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (('train', num_train), ('val', num_val)):
        for i in range(count):
            stem = f'city_{i:06d}_000019'
            for folder, suffix, image in (
                    ('leftImg8bit', 'leftImg8bit', rng.integers(0, 255, (256, 512, 3), dtype=np.uint8)),
                    ('gtFine', 'gtFine_labelTrainIds', np.repeat(np.arange(19, dtype=np.uint8)[
                        rng.integers(0, 19, (16, 32))], 16, axis=0).repeat(16, axis=1))):
                out = root / folder / split / 'city' / f'{stem}_{suffix}.png'
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(out)


@pytest.fixture(scope='module')
def scratch(tmp_path_factory) -> Path:
    """A folder laid out like a checkout, with tiny datasets where the docs
    expect the real ones and the user guide's configs in my_configs/."""
    root = tmp_path_factory.mktemp('checkout')
    for name in ('configs', 'tools', 'Makefile'):
        (root / name).symlink_to(REPO / name)
    shim(root / '.venv' / 'bin' / 'python')
    shim(root / 'bin' / 'python')
    (root / 'my_configs').mkdir()
    for path, text in user_guide_configs().items():
        (root / path).write_text(text)
    write_tiny_coco(root / 'data' / 'coco')
    write_tiny_cityscapes(root / 'data' / 'cityscapes')
    (root / 'demo.jpg').write_bytes((root / 'data' / 'coco' / 'val2017' / '000000000001.jpg')
                                    .read_bytes())
    return root


def run_entries() -> list:
    """The entries that run, each named after the first command it matches."""
    commands = [c for _, c in documented_commands()]
    params = []
    for entry in (e for e in COMMANDS if not e.not_run):
        shown = next((c for c in commands if re.fullmatch(entry.pattern, c)), entry.pattern)
        name = re.sub(r'^python (tools/)?', '', shown)
        params.append(pytest.param(entry, id=re.sub(r'[^\w.-]+', '_', name)[:80]))
    return params


@pytest.mark.slow
@pytest.mark.parametrize('entry', run_entries())
def test_documented_command_runs_as_written(entry, scratch):
    if entry.needs_shared and not SHARED_DATA.is_dir():
        pytest.skip(f'needs the shared data at {SHARED_DATA}')
    documented = sorted({c for _, c in documented_commands() if re.fullmatch(entry.pattern, c)})
    assert documented, f'no doc shows {entry.pattern!r} any more'
    env = dict(os.environ, PATH=f'{scratch / "bin"}{os.pathsep}{os.environ["PATH"]}',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
               PORT=str(free_port()), MPLBACKEND='Agg')
    for command in sorted({entry.command(c, scratch) for c in documented}):
        run = subprocess.run(['bash', '-c', command], cwd=scratch, env=env, capture_output=True,
                             text=True, timeout=900)
        output = run.stdout + run.stderr
        assert run.returncode == 0, f'{command}\nexit {run.returncode}\n{output[-3000:]}'
        if entry.prints:
            assert re.search(entry.prints, output), f'{command}\n{output[-3000:]}'
        for path in entry.creates:
            assert (scratch / path).exists(), f'{command} did not write {path}\n{output[-2000:]}'
        for path in entry.removes:
            assert not (scratch / path).exists(), f'{command} left {path}'
