"""Fixtures shared by the whole suite.

The real datasets live outside the repository, in ``../shared/data`` (see its
README): tests that need them ask for ``coco128_root`` or ``camvid_root`` and
are skipped, with the path they looked at, where the data is absent.
"""
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'

# The test machines have two cores, shared between parallel sessions.
torch.set_num_threads(2)


def _existing(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f'{what} not found at {path}')
    return path


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def shared_data() -> Path:
    """``../shared/data`` next to the repository."""
    return _existing(SHARED_DATA, 'shared data folder')


@pytest.fixture(scope='session')
def coco128_root(shared_data: Path) -> Path:
    """COCO128: ``images/`` and ``annotations/instances_{train,val}.json``."""
    return _existing(shared_data / 'coco128', 'COCO128')


@pytest.fixture(scope='session')
def camvid_root(shared_data: Path) -> Path:
    """SegNet's 11-class CamVid: ``train/``, ``trainannot/``, ``val/``, ``valannot/``."""
    return _existing(shared_data / 'camvid', 'CamVid')


class CodeMarker:
    """Unpickles to a shell command that creates ``path``: what a crafted
    checkpoint would run. ``path`` existing afterwards means code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f'touch {self.path}',)


@pytest.fixture
def code_marker(tmp_path) -> CodeMarker:
    return CodeMarker(tmp_path / 'code_ran')
