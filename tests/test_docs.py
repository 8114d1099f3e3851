"""What docs/get_started.md and docs/user_guide.md tell users to run works.

Every config snippet of the user guide is saved under ``my_configs/`` of a
scratch copy of the repository layout (as the guide says to) and built with
mmengine's registry under its default scope; detectors also run a forward
pass. Plain Python snippets are executed. Every tool a doc names exists and
answers ``--help``; links between docs resolve. The install and dataset
commands need the network and are not run, but the mmcv patch in
get_started.md must be the one tools/setup_env.sh applies.
"""
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / 'docs'
GUIDES = ('get_started.md', 'user_guide.md')


def code_blocks(doc: str, language: str) -> list[str]:
    text = (DOCS / doc).read_text()
    return re.findall(rf'^```{language}\n(.*?)^```', text, re.M | re.S)


CONFIG_SNIPPETS = [b for b in code_blocks('user_guide.md', 'python') if '_base_' in b]
PLAIN_SNIPPETS = [b for b in code_blocks('user_guide.md', 'python') if '_base_' not in b]


def snippet_id(block: str) -> str:
    base = re.search(r"_base_ = \[?\s*'([^']+)'", block).group(1)
    return Path(base).stem


@pytest.fixture(scope='module')
def scratch_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('checkout')
    (root / 'configs').symlink_to(REPO / 'configs')
    (root / 'my_configs').mkdir()
    return root


@pytest.mark.parametrize('block', CONFIG_SNIPPETS,
                         ids=[f'{i}-{snippet_id(b)}' for i, b in enumerate(CONFIG_SNIPPETS)])
def test_user_guide_config_snippet_builds_and_runs(block, scratch_repo):
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    import mbn_backbones  # noqa: F401

    path = scratch_repo / 'my_configs' / f'snippet_{abs(hash(block))}.py'
    path.write_text(block)
    cfg = Config.fromfile(str(path))
    scope = cfg.get('default_scope')
    assert scope in ('mmdet', 'mmseg')
    assert cfg.model.backbone.type.startswith('mbn_backbones.')
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model).eval()
    backbone = model.backbone
    assert type(backbone).__module__ == 'mbn_backbones.models.backbones'
    if scope == 'mmdet':
        with torch.no_grad():
            cls_scores, _ = model._forward(torch.zeros(1, 3, 300, 300))
        # the forward pass itself shows the neck and head fit the taps' channels
        assert len(cls_scores) == len(model.bbox_head.prior_generator.strides) == 6
    else:
        assert list(model.decode_head.in_channels) == backbone.out_channels
    frozen = getattr(backbone, 'frozen_stages', -1)
    for name in backbone.layer_names[:frozen + 1]:
        assert not any(p.requires_grad for p in getattr(backbone, name).parameters())
    if 'Pretrained' in block:
        assert backbone.init_cfg['type'] == 'Pretrained'


def with_random_batchnorm(cls):
    """``cls`` whose instances come with random BatchNorm statistics and affine
    parameters: freshly built ones (mean 0, var 1, weight 1, bias 0) would let
    a fold that drops or misplaces them go unnoticed."""
    from test_converters import randomise_norms

    def build(*args, **kwargs):
        return randomise_norms(cls(*args, **kwargs)).train()
    return build


@pytest.mark.parametrize('block', PLAIN_SNIPPETS)
def test_user_guide_python_snippet_runs(block, capsys, monkeypatch):
    import mbn_backbones.models
    monkeypatch.setattr(mbn_backbones.models, 'MobileNetV3',
                        with_random_batchnorm(mbn_backbones.models.MobileNetV3))
    scope = {}
    exec(compile(block, 'user_guide.md', 'exec'), scope)
    printed = capsys.readouterr().out
    if 'out_channels' in block:
        assert '[672, 960] [16, 32]' in printed
    if 'switch_to_deploy' in block or 'freeze_for_cpu' in block:
        # the snippet prints the largest difference; check it and the outputs themselves
        backbone, x = scope['backbone'], scope['x']
        with torch.no_grad():
            if 'freeze_for_cpu' in block:
                before, after = backbone(x)[0], scope['frozen'](x)[0]
            else:
                before, after = scope['before'], scope['after']
                assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                               for m in backbone.modules())  # folded away
        assert float(printed.strip()) < 1e-3
        assert before.abs().max() > 0.1
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))


def tools_named_in_docs() -> list[str]:
    tools = set()
    for doc in GUIDES:
        tools |= set(re.findall(r'\btools/[\w/]+\.py\b', (DOCS / doc).read_text()))
    return sorted(tools)


def test_every_tool_named_in_docs_answers_help(monkeypatch, capsys):
    tools = tools_named_in_docs()
    assert 'tools/deployment/pytorch2onnx.py' in tools and 'tools/demo/image_demo.py' in tools
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, 'path', list(sys.path))
    for tool in tools:
        assert (REPO / tool).is_file(), f'{tool} is named in docs/ but does not exist'
        # in this process, as `python TOOL --help`: one import of torch for all
        monkeypatch.setattr(sys, 'argv', [tool, '--help'])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO / tool), run_name='__main__')
        assert exit_info.value.code in (0, None), tool
        assert 'usage:' in capsys.readouterr().out, tool


def test_docs_name_only_existing_files_and_links():
    for doc in GUIDES:
        text = (DOCS / doc).read_text()
        for target in re.findall(r'\]\(([^)#]+)\)', text):
            if '://' in target:
                continue
            assert (DOCS / target).exists(), f'{doc} links to missing {target}'
        for path in re.findall(r'`((?:benchmarks|configs|tests|tools)/[\w./-]+\.(?:py|sh|md))`', text):
            assert (REPO / path).exists(), f'{doc} names missing {path}'


def test_get_started_patches_mmcv_like_setup_env():
    setup = (REPO / 'tools/setup_env.sh').read_text()
    doc = '\n'.join(code_blocks('get_started.md', 'bash'))
    doc_sed = re.search(r'^sed -i "([^"]+)"', doc, re.M).group(1)
    assert f'sed -i "{doc_sed}"' in setup
    for pin in ('torch==2.14.1', 'torchvision==0.29.1', '"setuptools<81"', 'mmcv==2.1.0',
                '--no-build-isolation'):
        assert pin in doc
        assert pin.replace('torch==2.14.1', 'torch==$TORCH_VERSION') \
            .replace('torchvision==0.29.1', 'torchvision==$TORCHVISION_VERSION') \
            .replace('mmcv==2.1.0', 'mmcv==$MMCV_VERSION') in setup
    for target in ('demo', 'test', 'clean', 'distclean'):
        assert re.search(rf'^{target}:', (REPO / 'Makefile').read_text(), re.M)


def test_speed_ratios_quoted_in_the_docs_are_those_of_benchmarks_readme():
    """A ratio (``1.5×``, ``2.3–7.3×``) in README.md, docs/ or a config family's
    README must be one benchmarks/README.md reports, so that a new benchmark
    run cannot leave older, hand-copied figures behind. docs/model_zoo.md is
    config_stats.py's output and states its own measurements."""
    benchmarks = (REPO / 'benchmarks' / 'README.md').read_text()
    docs = [REPO / 'README.md', *(d for d in sorted(DOCS.glob('*.md')) if d.name != 'model_zoo.md'),
            *sorted((REPO / 'configs').glob('*/README.md'))]
    quoted = {}
    for doc in docs:
        for figure in re.findall(r'(?<![\w.])(\d+\.\d+(?:–\d+\.\d+)?×)', doc.read_text()):
            quoted.setdefault(figure, []).append(str(doc.relative_to(REPO)))
    assert '1.0×' in quoted  # the targets, at least, are quoted
    missing = {f: where for f, where in quoted.items() if f not in benchmarks}
    assert not missing, f'ratios not in benchmarks/README.md: {missing}'
