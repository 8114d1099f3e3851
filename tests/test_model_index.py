"""model-index.yml and the configs/<family>/metafile.yml it imports describe
exactly the configs in configs/: every listed config exists and builds under
its default scope with the listed parameter count, and every config is
listed."""
import subprocess
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config

from mbn_backbones import deployment as dep
from mbn_backbones.utils.complexity import count_params

REPO = Path(__file__).resolve().parents[1]
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}


def load_index():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    collections, models = {}, []
    for metafile in index['Import']:
        meta = yaml.safe_load((REPO / metafile).read_text())
        for c in meta.get('Collections', []):
            assert c['Name'] not in collections, f'collection {c["Name"]} listed twice'
            collections[c['Name']] = dict(c, metafile=metafile)
        models += [dict(m, metafile=metafile) for m in meta.get('Models', [])]
    return index, collections, models


def repository_configs() -> list[str]:
    """Configs under configs/ except _base_: those git tracks in a checkout
    (files being written next to it are not part of the repository yet),
    else every one on disk."""
    try:
        tracked = subprocess.run(['git', 'ls-files', 'configs'], cwd=REPO, check=True,
                                 capture_output=True, text=True).stdout.split()
        paths = [Path(p) for p in tracked]
    except (OSError, subprocess.CalledProcessError):
        paths = [p.relative_to(REPO) for p in (REPO / 'configs').rglob('*.py')]
    return sorted(str(p) for p in paths
                  if p.suffix == '.py' and '_base_' not in p.parts and '__pycache__' not in p.parts)


INDEX, COLLECTIONS, MODELS = load_index()


def test_every_config_in_configs_is_listed_once():
    listed = [m['Config'] for m in MODELS]
    assert len(listed) == len(set(listed)), 'a config is listed twice'
    assert sorted(listed) == repository_configs()


def test_metafiles_follow_the_model_index_layout():
    for metafile in INDEX['Import']:
        assert (REPO / metafile).is_file(), metafile
    for c in COLLECTIONS.values():
        assert c['Paper']['URL'].startswith('https://arxiv.org/abs/')
        if 'README' in c:
            assert (REPO / c['README']).is_file(), f'{c["Name"]}: README {c["README"]} missing'
    names = [m['Name'] for m in MODELS]
    assert len(names) == len(set(names))
    for m in MODELS:
        assert m['Name'] == Path(m['Config']).stem
        assert m['In Collection'] in COLLECTIONS, m['Name']
        # the family's metafile lists the family's configs
        assert Path(m['Config']).parent == Path(m['metafile']).parent
        assert {'Training Data', 'Parameters', 'MAdds', 'Input Size'} <= set(m['Metadata'])
        assert 'Weights' not in m  # nothing trained and released yet


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_listed_config_builds_with_the_listed_parameter_count(model):
    cfg = Config.fromfile(str(REPO / model['Config']))
    scope = cfg.get('default_scope')
    assert scope in TASKS, f'{model["Config"]}: default_scope {scope!r}'
    built = dep.build_model(cfg.model, scope)
    assert type(built.backbone).__module__ == 'mbn_backbones.models.backbones'
    assert count_params(built) == model['Metadata']['Parameters']
    h, w = map(int, str(model['Metadata']['Input Size']).split('x'))
    for step in cfg.test_pipeline:
        if step['type'] == 'Resize':
            assert tuple(step['scale']) == (w, h)
            break
