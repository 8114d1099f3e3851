"""tools/demo/image_demo.py, run as a user would, on a generated image with a
checkpoint saved from an initialised model (with the dataset_meta that
tools/train.py checkpoints carry)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools/demo/image_demo.py'
DET_CONFIG = REPO / 'configs/ssdlite/ssdlite_mobilenetv3-large_synthetic.py'
SEG_CONFIG = REPO / 'configs/lraspp/lraspp_mobilenetv3-large_synthetic.py'


def save_initialised_checkpoint(config: Path, scope: str, dataset_meta: dict, path: Path):
    from mmengine.logging import MessageHub
    from mmengine.registry import MODELS, DefaultScope

    import mbn_backbones  # noqa: F401

    cfg = Config.fromfile(str(config))
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    model.init_weights()
    # a message hub with a logged loss, as every tools/train.py checkpoint has
    hub = MessageHub(f'demo_{path.stem}')
    hub.update_scalar('train/loss', 1.0)
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': dataset_meta},
                'message_hub': hub.state_dict()}, path)


@pytest.fixture(scope='module')
def image(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    pixels = np.full((120, 160, 3), 200, np.uint8)
    pixels[30:90, 40:100] = rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp('demo') / 'scene.png'
    Image.fromarray(pixels).save(path)
    return path


def run_demo(*args):
    result = subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_detection_demo_draws_boxes_above_the_threshold_only(image, tmp_path):
    classes = ('circle', 'square', 'triangle', 'cross')
    ckpt = tmp_path / 'det.pth'
    save_initialised_checkpoint(DET_CONFIG, 'mmdet', dict(classes=classes), ckpt)
    drawn = tmp_path / 'drawn.png'

    # an initialised SSDLite scores each of its 4 classes about 1/5: all pass 0.05
    out = run_demo(image, DET_CONFIG, ckpt, '--out', drawn, '--score-thr', '0.05')
    count, total = map(int, re.search(r'(\d+) detections with score >= 0.05 \(of (\d+)', out).groups())
    assert count == total > 0
    assert all(line.strip().split(':')[0] in classes
               for line in out.splitlines() if line.startswith('  '))

    original = np.asarray(Image.open(image).convert('RGB'))
    with_boxes = np.asarray(Image.open(drawn).convert('RGB'))
    assert with_boxes.shape == original.shape
    assert (with_boxes != original).any(axis=2).mean() > 0.01


def test_segmentation_demo_colours_every_pixel_by_its_class(image, tmp_path):
    from mmseg.utils import get_classes, get_palette

    ckpt = tmp_path / 'seg.pth'
    cityscapes = dict(zip(get_classes('cityscapes'), get_palette('cityscapes')))
    classes = tuple(Config.fromfile(str(SEG_CONFIG)).metainfo['classes'])
    meta = dict(classes=classes, palette=[cityscapes[c] for c in classes])
    save_initialised_checkpoint(SEG_CONFIG, 'mmseg', meta, ckpt)
    out_file = tmp_path / 'seg.png'
    out = run_demo(image, SEG_CONFIG, ckpt, '--out', out_file, '--opacity', '1')

    shares = dict(re.findall(r'^  (\S[^:]*): ([\d.]+)%$', out, re.M))
    assert shares and set(shares) <= set(meta['classes'])
    assert sum(float(s) for s in shares.values()) == pytest.approx(100, abs=0.1 * len(shares))
    # fully opaque: every pixel has the palette colour of one predicted class
    picture = np.asarray(Image.open(out_file).convert('RGB'))
    assert picture.shape == (120, 160, 3)
    allowed = {tuple(meta['palette'][meta['classes'].index(name)]) for name in shares}
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert colours <= allowed


def test_image_demo_names_a_missing_checkpoint(image, tmp_path):
    result = subprocess.run([sys.executable, str(TOOL), str(image), str(DET_CONFIG),
                             str(tmp_path / 'none.pth')], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert 'checkpoint' in result.stderr and 'none.pth' in result.stderr
