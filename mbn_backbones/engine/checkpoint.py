"""Checkpoint files that survive a kill, a full disk and a hostile pickle.

- :func:`atomic_save` and :func:`atomic_write_text` write to a temporary file
  in the destination folder, fsync it and ``os.replace`` it over the target
  (then fsync the folder), so the target is always either the old complete
  file or the new complete file, never a prefix of one.
- :func:`load_local_checkpoint` loads with ``weights_only=True`` and turns
  torch's errors into ones that name the file and say what to do.
- :func:`check_state_dict_matches` lists missing, unexpected and wrong-shape
  keys before a checkpoint is evaluated.
- :func:`existing_checkpoints` is what ``tools/train.py`` looks at before it
  agrees to write into a work dir.

:mod:`mbn_backbones.compat` plugs the first two into mmengine.
"""
import errno
import os
import os.path as osp
import pickle
import re
import tempfile
from typing import Iterable, Mapping, Optional

import torch

# Temporary files start with this, so that a cleanup (or a person) can tell
# them from checkpoints; nothing else in a work dir is named like it.
TMP_PREFIX = '.mbn_tmp_'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model."""


def _fsync_dir(folder: str) -> None:
    # The rename itself lives in the folder's entry table; without this a
    # power cut can forget it even though the file's data is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a folder we may not open for reading
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write, what: str) -> None:
    path = osp.abspath(osp.expanduser(str(path)))
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + osp.basename(path) + '.', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = ('the file there is unchanged' if osp.exists(path) else
                    'no file was created under that name') + ', files saved before are untouched'
            raise OSError(
                e.errno,
                f'no space left on the device while saving {what} {path} '
                f'({os.strerror(e.errno)}); {kept}. Free space (or choose another '
                f'--work-dir) and resume with tools/train.py CONFIG --resume') from e
        raise
    _fsync_dir(folder)


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)``, all or nothing.

    Raises:
        OSError: with the errno of the failure; out of disk space
            (``ENOSPC``, ``EDQUOT``) gets a message naming ``path`` and saying that
            the previous file is unchanged.
    """
    _atomic_write(path, lambda f: torch.save(obj, f), 'checkpoint')


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path``, all or nothing (used for ``last_checkpoint``)."""
    _atomic_write(path, lambda f: f.write(text.encode('utf-8')), 'file')


_GLOBAL_RE = re.compile(r'(?:Unsupported global: GLOBAL|unsupported GLOBAL|global) ([\w.]+)')


def load_local_checkpoint(filename: str, map_location=None):
    """Load a checkpoint file with ``weights_only=True``, explaining failures.

    A pickle that would import or call anything beyond tensors, containers and
    the globals :mod:`mbn_backbones.compat` allows is refused before any of it
    runs; the error names the file and the global it asked for.

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        pickle.UnpicklingError: the file asks for code to run.
        CheckpointError: the file is empty, truncated or not a checkpoint.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(errno.ENOENT, f'checkpoint file not found: {filename}', filename)
    size = osp.getsize(filename)
    if size == 0:
        raise CheckpointError(f'checkpoint {filename} is empty (0 bytes): it was not '
                              f'written completely; use an earlier checkpoint')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = _GLOBAL_RE.search(str(e))
        asked = f' it asks for {found.group(1)},' if found else ''
        raise pickle.UnpicklingError(
            f'refused to load checkpoint {filename}:{asked} which is neither a '
            f'tensor nor something mmengine checkpoints hold, so loading it could '
            f'run code. Nothing from the file was executed. If you wrote this file '
            f'yourself and trust it, re-save its tensors with torch.save(state_dict).'
            f'\n(torch: {e})') from e
    except (RuntimeError, EOFError) as e:
        if isinstance(e, EOFError) or 'PytorchStreamReader' in str(e) or \
                'zip archive' in str(e) or 'invalid load key' in str(e):
            raise CheckpointError(
                f'checkpoint {filename} ({size} bytes) is truncated or not a torch '
                f'checkpoint ({e}); use an earlier checkpoint') from e
        raise


def _state_dict_of(checkpoint) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get('state_dict'), Mapping):
        return checkpoint['state_dict']
    if isinstance(checkpoint, Mapping):
        return checkpoint
    raise CheckpointError(f'checkpoint holds a {type(checkpoint).__name__}, not a state dict')


def _listing(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return f'{len(keys)}: {shown}{more}'


def check_state_dict_matches(model: torch.nn.Module, checkpoint, filename: str = '') -> None:
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` fits ``model`` exactly.

    mmengine's ``load_checkpoint`` only logs missing and unexpected keys, so a
    test run on a checkpoint of another architecture evaluates random weights
    and reports a near-zero metric. The message names the class counts when
    a head has another number of classes than the checkpoint's, then lists
    missing keys, unexpected keys and shape mismatches (a few of each, with
    counts).
    """
    state = {k[len('module.'):] if k.startswith('module.') else k: v
             for k, v in _state_dict_of(checkpoint).items()}
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}'
              for k in sorted(set(expected) & set(state))
              if hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    lines = [f'checkpoint {filename or "(in memory)"} does not fit {type(model).__name__}:']
    from .class_count import class_count_mismatches, describe_class_count  # imports mmengine
    classes = describe_class_count(class_count_mismatches(model, checkpoint))
    if classes:  # the likeliest cause, in plain words first
        lines.append(f'  {classes}')
    if missing:
        lines.append(f'  missing keys (in the model, not in the checkpoint) {_listing(missing)}')
    if unexpected:
        lines.append(f'  unexpected keys (in the checkpoint, not in the model) {_listing(unexpected)}')
    if shapes:
        lines.append(f'  shape mismatches {len(shapes)}: ' + '; '.join(shapes[:5]))
    prefixes = {k.split('.', 1)[0] + '.' for k in missing if '.' in k}
    part = next((p for p in sorted(prefixes)
                 if unexpected and sum(p + k in missing for k in unexpected) > len(unexpected) / 2),
                None)
    if part is not None:
        lines.append(f"  Its keys are those of the model's '{part[:-1]}' without the '{part}' prefix: "
                     f'it is a {part[:-1]} checkpoint. To start from it, set '
                     f"model.{part[:-1]}.init_cfg=dict(type='Pretrained', checkpoint=...)")
    else:
        lines.append('  Is it a checkpoint of this config (same arch, widen_factor, num_classes)?')
    raise CheckpointMismatchError('\n'.join(lines))


_CHECKPOINT_RE = re.compile(r'^(epoch|iter)_\d+\.pth$|^best_.*\.pth$')


def existing_checkpoints(work_dir: str) -> list:
    """Names of the checkpoints (``epoch_*.pth``, ``iter_*.pth``, ``best_*.pth``) and of
    ``last_checkpoint`` in ``work_dir``."""
    if not osp.isdir(work_dir):
        return []
    return sorted(n for n in os.listdir(work_dir)
                  if _CHECKPOINT_RE.match(n) or n == 'last_checkpoint')


def resolve_last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``work_dir/last_checkpoint`` names, or None without that file.

    mmengine writes an absolute path there; when the work dir was moved or
    copied, a file of the same name inside ``work_dir`` is the one meant.

    Raises:
        CheckpointError: ``last_checkpoint`` names a file that exists neither
            where it says nor in ``work_dir``.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        named = f.read().strip()
    if osp.isfile(named):
        return named
    local = osp.join(work_dir, osp.basename(named))
    if named and osp.isfile(local):
        return local
    raise CheckpointError(f'{record} names {named!r}, which does not exist (nor does {local}); '
                          f'resume from a checkpoint that exists: --resume PATH')
