"""Checkpoint files that survive a kill, a full disk and a hostile pickle.

- :func:`atomic_save` and :func:`atomic_write_text` write to a temporary file
  in the destination folder, fsync it and ``os.replace`` it over the target
  (then fsync the folder), so the target is always either the old complete
  file or the new complete file, never a prefix of one.
- :func:`load_local_checkpoint` loads with ``weights_only=True``, allowing
  exactly the non-tensor types mmengine's checkpoints hold
  (:func:`mmengine_checkpoint_globals`) for the duration of that load only,
  and turns torch's errors into ones that name the file and say what to do.
- :func:`read_checkpoint` does the same for URLs and model-zoo names, through
  :func:`download_checkpoint` (torch hub's cache, written atomically); files
  whose names carry a SHA-256 prefix (:func:`published_hash_prefix`) are
  checked against it before they are unpickled.
- :func:`check_state_dict_matches` lists missing, unexpected and wrong-shape
  keys before a checkpoint is evaluated.
- :func:`existing_checkpoints` is what ``tools/train.py`` looks at before it
  agrees to write into a work dir.

:class:`mbn_backbones.engine.Runner` and :class:`mbn_backbones.engine.CheckpointHook`
save and load through these; nothing here changes mmengine or torch.
"""
import contextlib
import errno
import hashlib
import http.client
import io
import os
import os.path as osp
import pickle
import re
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterable, Mapping, Optional
from urllib.parse import urlparse

import torch

# Temporary files start with this, so that a cleanup (or a person) can tell
# them from checkpoints; nothing else in a work dir is named like it.
TMP_PREFIX = '.mbn_tmp_'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not fit the model."""


class CheckpointHashError(CheckpointError):
    """A checkpoint whose SHA-256 does not start with the digits its name carries."""


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


def _umask() -> int:
    # os.umask can only be read by setting it; /proc has it without that race.
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_leftovers(folder: str) -> list:
    """Delete the temporary files that killed saves left in ``folder``; their names.

    A save killed between creating its temporary file and renaming it leaves
    a ``.mbn_tmp_*`` file as large as a checkpoint. Only one process saves
    into a work dir (rank 0; ``tools/train.py`` refuses a second run), so any
    such file there when a save or a resume starts is a leftover.
    """
    if not osp.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(TMP_PREFIX):
            try:
                os.unlink(osp.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _atomic_write(path: str, write, what: str, verify=None) -> None:
    # verify(temporary path) runs before the file gets its name; raising there keeps it out
    path = osp.abspath(osp.expanduser(str(path)))
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + osp.basename(path) + '.', dir=folder)
    try:
        # mkstemp creates 0600; a checkpoint gets what open() would give it
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
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


# HistoryBuffer.__getstate__ pickles the class's statistics methods, which
# pickle writes as getattr(HistoryBuffer, name); these are the ones every
# HistoryBuffer registers (HistoryBuffer._set_default_statistics).
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_statistic(obj, name):
    """Stand-in for ``builtins.getattr`` while ``torch.load`` unpickles.

    Checkpoints name ``getattr`` only to fetch ``HistoryBuffer.min``,
    ``.max``, ``.current`` and ``.mean``; allowing the real ``getattr`` would
    let a checkpoint read any attribute of any object it can reach. This one
    returns those four methods and refuses everything else.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer\'s '
        f'statistics methods {HISTORY_BUFFER_STATISTICS} are allowed')


def mmengine_checkpoint_globals() -> list:
    """What ``weights_only`` unpickling must allow in a checkpoint saved by mmengine's Runner.

    torch >= 2.6 loads with ``weights_only=True`` by default and refuses every
    global it does not know; mmengine 0.10.7's checkpoints hold the message
    hub's ``HistoryBuffer`` objects with numpy arrays, and numpy scalars, so
    ``Runner.resume`` fails with ``Weights only load failed ... Unsupported
    global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``.

    Found by saving checkpoints from real mmdet (SSDLite, SGD, warm-up and
    cosine schedule) and mmseg (LR-ASPP, AdamW, warm-up and poly schedule,
    ``save_best='mIoU'``) runners and a toy runner (SGD and AdamW, multi-step
    schedule), then reading their pickles and loading them:

    - ``mmengine.logging.history_buffer.HistoryBuffer``: the message hub's
      ``log_scalars`` (losses, lr, times, metrics);
    - ``builtins.getattr``, answered by :func:`history_buffer_statistic`:
      each HistoryBuffer's state holds its class's statistics methods;
    - ``numpy.core.multiarray._reconstruct`` and ``numpy.ndarray``: the
      HistoryBuffer's value and count histories;
    - ``numpy.dtype`` and the dtype classes ``Float64DType`` and
      ``Int64DType`` that unpickling builds: those histories are float64 and
      int64 (``HistoryBuffer.update`` takes only Python ints and floats);
    - ``numpy.core.multiarray.scalar``: numpy float64 scalars in
      ``runtime_info``, e.g. ``eta`` (every checkpoint) and ``best_score``.

    Everything else in a checkpoint (``meta`` with the config text and
    ``dataset_meta``, optimizer and scheduler state, ``OrderedDict``,
    ``Counter``) torch allows already.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    # The project pins numpy < 2; numpy 2 pickles these under numpy._core.
    multiarray = np.core.multiarray if np.lib.NumpyVersion(np.__version__) < '2.0.0' \
        else np._core.multiarray
    return [
        HistoryBuffer,
        (history_buffer_statistic, 'builtins.getattr'),
        multiarray._reconstruct,
        np.ndarray,
        np.dtype,
        np.dtypes.Float64DType,
        np.dtypes.Int64DType,
        multiarray.scalar,
    ]


@contextlib.contextmanager
def checkpoint_safe_globals():
    """Context in which ``torch.load(weights_only=True)`` reads mmengine checkpoints.

    - torch's ``safe_globals`` context: the globals of
      :func:`mmengine_checkpoint_globals` are allowed inside it and the
      process-wide list is as it was once it exits;
    - ``HistoryBuffer``'s statistics methods are as they were once it exits.
      mmengine 0.10.7's ``HistoryBuffer.__setstate__`` merges the methods a
      checkpoint names into a dict of the *class*, so one loaded file could
      remap ``mean`` to ``max`` for every logger in the process (and every
      checkpoint saved after).
    """
    from mmengine.logging import HistoryBuffer
    statistics = dict(HistoryBuffer._statistics_methods)
    try:
        with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
            yield
    finally:
        HistoryBuffer._statistics_methods.clear()
        HistoryBuffer._statistics_methods.update(statistics)


# torch hub's rule for the files it downloads (torch.hub.HASH_REGEX): the hex
# digits after a '-' and before a '.' of the URL's file name start the file's
# SHA-256, as torchvision and OpenMMLab publish them ('mobilenet_v2-b0353104.pth',
# '..._20210629_110627-974d9307.pth').
URL_HASH_RE = torch.hub.HASH_REGEX
# A local file is held to its name only when named as those are published: 8 or
# more hex digits after its last '-' (torch hub's "first eight or more digits"),
# so that 'ssdlite-1.pth' or 'run-2a.pth' are not taken for hashes.
LOCAL_HASH_RE = re.compile(r'-([a-f0-9]{8,})\.[^-]*$')


def published_hash_prefix(filename: str) -> Optional[str]:
    """The start of the SHA-256 that the name of ``filename`` carries, or None.

    For a URL (``://``), torch hub's rule on the file name of its path: the
    hex digits between the first ``-`` followed by hex digits and a ``.``
    (``https://.../mobilenet_v2-b0353104.pth``: ``b0353104``). For a local
    path, 8 or more hex digits between the file name's last ``-`` and its
    extension (``ssdlite_..._110627-974d9307.pth``: ``974d9307``).
    """
    filename = str(filename)
    if '://' in filename:
        found = URL_HASH_RE.search(osp.basename(urlparse(filename).path))
    else:
        found = LOCAL_HASH_RE.search(osp.basename(filename))
    return found.group(1) if found and found.group(1) else None


def _sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _check_hash(sha256: str, expected: str, filename: str, kept: str) -> None:
    if sha256.startswith(expected):
        return
    raise CheckpointHashError(
        f'checkpoint {filename} is not the file its name stands for: the name carries the '
        f'SHA-256 prefix {expected}, the file\'s SHA-256 starts with '
        f'{sha256[:len(expected)]} ({sha256}). It is damaged, incomplete or another file, '
        f'and was not loaded; {kept}')


def load_local_checkpoint(filename: str, map_location=None):
    """Load a checkpoint file with ``weights_only=True``, explaining failures.

    A pickle that would import or call anything beyond tensors, containers and
    :func:`mmengine_checkpoint_globals` is refused before any of it runs; the
    error names the file and the global it asked for. A file named as
    published checkpoints are (:func:`published_hash_prefix`) is loaded only
    when its SHA-256 starts with those digits.

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        pickle.UnpicklingError: the file asks for code to run.
        CheckpointHashError: the file's SHA-256 is not the one its name carries.
        CheckpointError: the file is empty, truncated or not a checkpoint.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(errno.ENOENT, f'checkpoint file not found: {filename}', filename)
    expected = published_hash_prefix(filename)
    if expected:
        _check_hash(_sha256_of_file(filename), expected, filename,
                    "the file is left as it is. If the digits after the last '-' of its name "
                    'are not a hash, rename the file')
    return _load_explained(filename, filename, osp.getsize(filename), map_location)


def download_checkpoint(url: str) -> str:
    """The copy of the checkpoint at ``url`` (http, https) in torch hub's cache.

    Where ``torch.hub`` and mmengine keep it
    (``$TORCH_HOME/hub/checkpoints/<file name>``); downloaded when absent.
    The download gets that name only once it is complete (written as
    :func:`atomic_save` writes), its SHA-256 starts with the prefix the URL's
    file name carries (:func:`published_hash_prefix`), and it loads with
    ``weights_only=True``: a hostile file is not left in the cache for torch
    hub to unpickle later. A copy already there is hash checked each time; one
    that fails is left as it is.

    Raises:
        CheckpointHashError: the download, or the cached copy, has another SHA-256.
        pickle.UnpicklingError: the download asks for code to run.
        CheckpointError: the download failed or is not a torch checkpoint.
    """
    name = osp.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f'checkpoint URL {url} names no file')
    path = osp.join(torch.hub.get_dir(), 'checkpoints', name)
    expected = published_hash_prefix(url)
    if osp.isfile(path):
        if expected:
            _check_hash(_sha256_of_file(path), expected, f'{path} (cached copy of {url})',
                        'the cached copy is left as it is: delete it to download it again')
        return path

    def fetch(f):
        from tqdm import tqdm
        digest = hashlib.sha256()
        request = urllib.request.Request(url, headers={'User-Agent': 'mbn_backbones'})
        try:
            with urllib.request.urlopen(request) as response, tqdm(
                    total=int(response.headers.get('Content-Length') or 0) or None,
                    desc=name, unit='B', unit_scale=True, unit_divisor=1024,
                    leave=False) as bar:
                for block in iter(lambda: response.read(1 << 20), b''):
                    digest.update(block)
                    f.write(block)
                    bar.update(len(block))
        except (urllib.error.URLError, http.client.HTTPException) as e:
            raise CheckpointError(f'cannot download checkpoint {url}: {e}') from e
        if expected:
            _check_hash(digest.hexdigest(), expected, url, f'nothing was saved as {path}')

    def loads(tmp):
        _load_explained(tmp, url, osp.getsize(tmp), 'cpu')

    from mmengine.logging import print_log
    for stale in remove_stale_downloads(osp.dirname(path), name):
        print_log(f'removed {stale}, left by a download that was killed', logger='current')
    print_log(f'downloading {url} to {path}', logger='current')
    _atomic_write(path, fetch, 'checkpoint', verify=loads)
    return path


STALE_DOWNLOAD_S = 600


def remove_stale_downloads(folder: str, name: str, age_s: float = STALE_DOWNLOAD_S) -> list:
    """Delete the temporary files of killed downloads of ``name`` in torch
    hub's cache; their paths.

    Unlike a work dir, the cache is shared: another process may be
    downloading the same file right now, and its temporary file grows as it
    does. Only those untouched for ``age_s`` seconds are leftovers.
    """
    if not osp.isdir(folder):
        return []
    removed, now = [], time.time()
    for entry in os.scandir(folder):
        if entry.name.startswith(f'{TMP_PREFIX}{name}.'):
            try:
                if now - entry.stat().st_mtime > age_s:
                    os.unlink(entry.path)
                    removed.append(entry.path)
            except OSError:
                pass
    return removed


def pretrained_init_cfgs(init_cfg) -> list:
    """The ``Pretrained`` entries of a module's ``init_cfg`` (one dict or a
    list of them) that name a checkpoint: what mmengine's ``init_weights``
    will load."""
    from mmengine.model.weight_init import PretrainedInit
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return [c for c in cfgs if isinstance(c, Mapping) and isinstance(c.get('checkpoint'), str)
            and c.get('type') in ('Pretrained', PretrainedInit)]


# mmengine's model-zoo names (its CheckpointLoader schemes that stand for a URL)
ZOO_SCHEMES = ('torchvision://', 'modelzoo://', 'open-mmlab://', 'openmmlab://', 'mmcls://')


def model_zoo_url(filename: str) -> Optional[str]:
    """What mmengine's ``CheckpointLoader`` reads for a model-zoo name
    (:data:`ZOO_SCHEMES`), from mmengine's own tables: a URL, or for some
    ``open-mmlab://`` names a file in mmengine's home. None for other names.

    Raises:
        ValueError: a model-zoo name that mmengine's tables do not have.
    """
    filename = str(filename)
    if not filename.startswith(ZOO_SCHEMES):
        return None
    from mmengine.runner import checkpoint as mmengine_checkpoint
    scheme, _, model = filename.partition('://')
    if scheme in ('torchvision', 'modelzoo'):
        urls = mmengine_checkpoint.get_torchvision_models()
    elif scheme == 'mmcls':
        urls = mmengine_checkpoint.get_mmcls_models()
    else:
        urls = mmengine_checkpoint.get_external_models()
        model = mmengine_checkpoint.get_deprecated_model_names().get(model, model)
    if model not in urls:
        raise ValueError(f'checkpoint {filename}: mmengine knows no {scheme} model {model!r}')
    url = urls[model]
    if not url.startswith(('http://', 'https://')):
        url = osp.join(mmengine_checkpoint._get_mmengine_home(), url)  # noqa: SLF001
    return url


def read_checkpoint(filename: str, map_location=None, backend_args: Optional[dict] = None):
    """:func:`load_local_checkpoint` for a path; for an http(s) URL the same on
    its copy in torch hub's cache (:func:`download_checkpoint`); for a
    model-zoo name (:func:`model_zoo_url`) the same on what it stands for,
    ``mmcls://`` names cut to their ``backbone.`` keys as mmengine does; for
    another URI (``s3://`` ...) the same after reading its bytes with
    mmengine's file backends. mmengine's own loaders for URLs go through
    ``torch.hub``, which unpickles with ``weights_only=False`` and checks no
    hash; here a URL whose file name carries a SHA-256 prefix
    (:func:`published_hash_prefix`) is checked against it before anything
    is unpickled.

    Raises:
        ValueError: a URI that mmengine.fileio cannot read (``pavi://``,
            ``timm://`` ...).
    """
    filename = str(filename)
    if '://' not in filename:
        return load_local_checkpoint(filename, map_location)
    zoo = model_zoo_url(filename)
    if zoo is not None:
        checkpoint = read_checkpoint(zoo, map_location, backend_args)
        if filename.startswith('mmcls://'):
            from mmengine.runner.checkpoint import _process_mmcls_checkpoint
            checkpoint = _process_mmcls_checkpoint(checkpoint)
        return checkpoint
    if filename.startswith(('http://', 'https://')):
        path = download_checkpoint(filename)
        return _load_explained(path, f'{filename} (cached as {path})', osp.getsize(path),
                               map_location)
    from mmengine import fileio
    try:
        fileio.get_file_backend(filename, backend_args=backend_args)
    except ValueError as e:
        raise ValueError(f'cannot read checkpoint {filename}: mbn_backbones loads local files, '
                         f'URIs that mmengine.fileio reads (http, https, s3, ...) and the '
                         f'model-zoo names {ZOO_SCHEMES}; give the URL this name stands '
                         f'for ({e})') from e
    data = fileio.get(filename, backend_args=backend_args)
    expected = published_hash_prefix(filename)
    if expected:
        _check_hash(hashlib.sha256(data).hexdigest(), expected, filename, 'nothing was saved')
    return _load_explained(io.BytesIO(data), filename, len(data), map_location)


def _load_explained(source, filename: str, size: int, map_location):
    if size == 0:
        raise CheckpointError(f'checkpoint {filename} is empty (0 bytes): it was not '
                              f'written completely; use an earlier checkpoint')
    try:
        with checkpoint_safe_globals():
            return torch.load(source, map_location=map_location, weights_only=True)
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
