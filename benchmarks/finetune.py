"""What the fine-tuning benchmarks share (``camvid_finetune.py``,
``coco128_finetune.py``): Google's ImageNet weights as a backbone
checkpoint, one resumable mmengine run per model, the metric curve, the
training speed, the plot and the report.

Each model trains in ``<work-dir>/<model>/`` with mmengine's own Runner
(ours, ``mbn_backbones.Runner``, as our configs name it): checkpoints,
logs and the config that was run (``config.py``) stay there, so that the
trained model can be evaluated again with ``tools/test.py``. A run that is
stopped resumes from its last checkpoint when the benchmark is started
again with the same options; a model that finished is not trained again
(its ``result.json`` is reused) unless ``--fresh`` is given. A run with
other options (``--iters``, ``--lr``...) goes to a new folder beside the
old one (``<model>_<date>_<time>``), which is left as it is.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

from common import REPO_ROOT, check_counts

SHARED = REPO_ROOT.parent / 'shared'
TFLITE_DIR = SHARED / 'weights' / 'tflite'


def finetune_parser(doc: str, name: str, models: tuple[str, ...], iters: int, batch: int,
                    val_interval: int, lr: float, tflite: str, latency_rounds: int,
                    ablations: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parser with the options every fine-tuning benchmark has; its own
    come after, then :func:`parse_finetune_args`. ``ablations`` are models
    trained only when ``--models`` names them."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tflite', default=str(TFLITE_DIR / tflite),
                        help="Google's ImageNet classifier (default: %(default)s)")
    parser.add_argument('--latency-rounds', type=int, default=latency_rounds,
                        help='timed rounds of the inference latency (default: %(default)s)')
    parser.add_argument('--models', nargs='+', default=list(models), choices=models + ablations,
                        metavar='MODEL', help=f'models to train, of {", ".join(models)} '
                                              '(default: all)' + (
                                                  f' and the ablations {", ".join(ablations)}'
                                                  if ablations else ''))
    parser.add_argument('--iters', type=int, default=iters,
                        help='training iterations per model, the same for every model '
                             '(default: %(default)s, about right for 2 CPU cores; '
                             'on a GPU try 10x)')
    parser.add_argument('--batch', type=int, default=batch,
                        help='images per iteration (default: %(default)s)')
    parser.add_argument('--val-interval', type=int, default=val_interval,
                        help='evaluate every this many iterations, for the curve '
                             '(default: %(default)s; the last iteration is always evaluated)')
    parser.add_argument('--lr', type=float, default=lr,
                        help='peak learning rate, the same for every model (default: %(default)s)')
    parser.add_argument('--backbone-lr-mult', type=float, default=1.0,
                        help="the ImageNet-initialised backbones' learning rate as a fraction of "
                             "--lr (default: %(default)s; from scratch it is always 1; 0.1 "
                             'measured 17.4 against 20.3 mIoU at 100 CamVid iterations)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch threads on a CPU (default: %(default)s)')
    parser.add_argument('--workers', type=int, default=2,
                        help='data loader workers (default: %(default)s)')
    parser.add_argument('--fresh', action='store_true',
                        help='train every model again, even one that finished with these options')
    parser.add_argument('--work-dir', default=str(REPO_ROOT / 'work_dirs' / name),
                        help='one folder per model: checkpoints, logs, config '
                             '(default: %(default)s)')
    parser.add_argument('--out', default=str(REPO_ROOT / 'work_dirs' / 'benchmarks' /
                                             f'{name}.json'),
                        help='JSON report; the plot is written next to it as .png '
                             '(default: %(default)s)')
    return parser


def parse_finetune_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse; exit naming the option whose value is out of range."""
    args = parser.parse_args(argv)
    check_counts(parser, args, ('iters', 'batch', 'val_interval', 'threads', 'latency_rounds'),
                 ('workers',))
    for option in ('lr', 'backbone_lr_mult'):
        if getattr(args, option) <= 0:
            parser.error(f'--{option.replace("_", "-")} must be > 0, got '
                         f'{getattr(args, option)}')
    return args


def require(path: Path, what: str) -> Path:
    """``path``, or exit naming it and what it should hold."""
    if not path.exists():
        sys.exit(f'error: {path} not found: {what}')
    return path


def imagenet_backbone(tflite: Path, out_dir: Path, norm_eps: float) -> tuple[str, dict]:
    """Google's TFLite classifier as a backbone checkpoint (made once, then
    reused) and the backbone config that loads it (TF padding, the file's
    arch and width).

    The file's BatchNorms are folded into its convolutions: the checkpoint
    holds identity statistics (mean 0, variance ``1 - eps``), which the
    backbone must keep (``norm_eval=True``) while it is fine-tuned.
    """
    from mbn_backbones.engine.checkpoint import atomic_save, load_local_checkpoint
    from mbn_backbones.tflite import checkpoints, convert_tflite

    # the identity statistics depend on eps: one file per eps
    dst = out_dir / f'{tflite.stem}_eps{norm_eps:g}_backbone.pth'
    if dst.is_file():
        ckpt = load_local_checkpoint(str(dst))
        backbone = ckpt['meta']['backbone']
    else:
        result = convert_tflite(str(tflite), norm_eps=norm_eps)
        ckpt, _ = checkpoints(result)
        backbone = result.backbone
        atomic_save(ckpt, str(dst))
    return str(dst), dict(backbone)


class _FileBacked:
    """A JSON file next to a run's checkpoints, written whole or not at all."""

    def __init__(self, path: Path, default):
        self.path = path
        self.value = json.loads(path.read_text()) if path.is_file() else default

    def save(self) -> None:
        from mbn_backbones.engine.checkpoint import atomic_write_text
        atomic_write_text(str(self.path), json.dumps(self.value, indent=1) + '\n')


def curve_and_speed_hooks(work_dir: Path, metric_keys: tuple[str, ...]):
    """Two hooks: one records the chosen validation metrics at each
    evaluation (``curve.json``), one the images and seconds of each training
    iteration after the first two (``speed.json``). Both survive a resume."""
    from mmengine.hooks import Hook

    class CurveHook(Hook):
        priority = 'LOW'

        def before_train(self, runner):
            self.curve = _FileBacked(work_dir / 'curve.json', [])
            # after a resume, what was recorded beyond the checkpoint is redone
            self.curve.value = [p for p in self.curve.value if p['iter'] <= runner.iter]

        def after_val_epoch(self, runner, metrics=None):
            short = {k.split('/', 1)[-1]: float(v) for k, v in (metrics or {}).items()}
            point = dict(iter=runner.iter, **{k: v for k, v in short.items()
                                              if k in metric_keys or k.startswith('IoU.')})
            if not metrics:  # e.g. CocoMetric when nothing was detected: it scores 0
                point.update(dict.fromkeys(metric_keys, 0.0), nothing_predicted=True)
            self.curve.value = [p for p in self.curve.value if p['iter'] != runner.iter]
            self.curve.value.append(point)
            self.curve.save()

    class SpeedHook(Hook):
        priority = 'VERY_LOW'

        def before_train(self, runner):
            self.speed = _FileBacked(work_dir / 'speed.json', dict(iterations=[]))
            self.first = runner.iter

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter - self.first > 2:  # warm-up iterations left out
                self.speed.value['iterations'].append(
                    [len(data_batch['inputs']), time.perf_counter() - self.start])

        def after_train(self, runner):
            self.speed.save()

        def before_save_checkpoint(self, runner, checkpoint):
            self.speed.save()

    return CurveHook(), SpeedHook()


def train(name: str, cfg, args, metric_keys: tuple[str, ...], options: dict | None = None,
          keep: dict | None = None) -> dict:
    """Train one model of a benchmark (or reuse its finished result) and
    return its result: the curve, the last evaluation, training images/s and
    where its checkpoint and config are.

    ``metric_keys``: the validation metrics the curve records (also every
    ``IoU.<class>``); ``options``: what else, besides the common options,
    must match for a finished result to be reused; ``keep``: a dict that
    receives the trained model under ``name`` (read back from its checkpoint
    when the result is reused).
    """
    import torch
    from mmengine.registry import RUNNERS

    from mbn_backbones.engine import ProgressBarHook
    from mbn_backbones.utils import quiet_upstream_noise

    signature = dict(iters=args.iters, batch=args.batch, lr=args.lr,
                     backbone_lr_mult=args.backbone_lr_mult,
                     val_interval=args.val_interval, **(options or {}))
    work_dir = run_folder(Path(args.work_dir), name, signature, args.fresh)
    result_file = work_dir / 'result.json'
    if result_file.is_file():
        done = json.loads(result_file.read_text())
        print(f'[{name}] finished earlier with these options: {result_file}')
        if keep is not None:
            keep[name] = load_trained(done)
        return done
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / 'signature.json').write_text(json.dumps(signature) + '\n')

    cfg.work_dir = str(work_dir)
    cfg.runner_type = 'mbn_backbones.Runner'
    cfg.resume = (work_dir / 'last_checkpoint').is_file()
    cfg.log_level = 'WARNING'
    if cfg.get('visualizer'):
        # mmengine keeps one visualizer per name in a process: without a name of
        # its own, each later model's scalars would go to the first model's folder
        cfg.visualizer.name = f'{work_dir.name}_{time.strftime("%Y%m%d_%H%M%S")}'
    cfg.dump(str(work_dir / 'config.py'))
    runner = RUNNERS.build(cfg)
    quiet_upstream_noise(runner.logger)
    curve_hook, speed_hook = curve_and_speed_hooks(work_dir, metric_keys)
    for hook in (curve_hook, speed_hook, ProgressBarHook()):
        runner.register_hook(hook)
    if cfg.resume:
        print(f'[{name}] resuming from {(work_dir / "last_checkpoint").read_text().strip()}')
    print(f'[{name}] training {args.iters} iterations of {args.batch} images', flush=True)
    start = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - start
    curve = curve_hook.curve.value
    if not curve or curve[-1]['iter'] != args.iters:
        raise RuntimeError(f'[{name}] no evaluation at iteration {args.iters}: '
                           'the train loop must validate at its last iteration')
    result = dict(
        name=name, signature=signature, curve=curve, final=curve[-1],
        train_images_per_s=images_per_s(speed_hook.speed.value['iterations']),
        train_seconds_this_run=round(seconds, 1),
        checkpoint=str(work_dir / f'iter_{args.iters}.pth'),
        config=str(work_dir / 'config.py'),
        device='cuda' if torch.cuda.is_available() else 'cpu')
    if keep is not None:
        keep[name] = runner.model
    result_file.write_text(json.dumps(result, indent=1) + '\n')
    return result


def run_folder(root: Path, name: str, signature: dict, fresh: bool) -> Path:
    """The folder of model ``name``'s run with these options: the one of
    ``<root>/<name>``, ``<root>/<name>_<time>`` that ran with them (to reuse its
    result or resume it), else a new one. A folder of a run with other
    options is never resumed, changed or deleted: the new run goes beside it.
    With ``fresh``, always a new folder."""
    stamped = re.compile(rf'{re.escape(name)}_\d{{8}}_\d{{6}}(_\d+)?')
    candidates = sorted(p for p in root.glob(f'{name}_*') if stamped.fullmatch(p.name))
    if not fresh:
        for folder in [root / name, *reversed(candidates)]:
            if ran_with(folder) == signature:
                return folder
    if not (root / name).exists():
        return root / name
    folder = root / f'{name}_{time.strftime("%Y%m%d_%H%M%S")}'
    for n in range(2, 1000):  # never one that exists
        if not folder.exists():
            break
        folder = folder.with_name(f'{name}_{time.strftime("%Y%m%d_%H%M%S")}_{n}')
    print(f'[{name}] {root / name} holds a run with other options; this one goes to {folder}')
    return folder


def ran_with(folder: Path) -> dict | None:
    """The options of the run in ``folder`` (None if there is none)."""
    for marker in (folder / 'signature.json', folder / 'result.json'):
        if marker.is_file():
            value = json.loads(marker.read_text())
            return value.get('signature') if marker.name == 'result.json' else value
    return None


def images_per_s(iterations: list[list[float]]) -> float | None:
    """Training images/s from ``[images, seconds]`` per iteration: the images
    of a full batch over the median iteration time, which a burst of other
    load on a shared machine moves least."""
    if not iterations:
        return None
    batch = max(images for images, _ in iterations)
    return round(batch / statistics.median(seconds for _, seconds in iterations), 2)


def load_trained(result: dict):
    """The model of a finished result, built from its ``config.py`` and its
    last checkpoint (read with ``weights_only=True``)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from mbn_backbones.engine.checkpoint import load_local_checkpoint

    cfg = Config.fromfile(result['config'])
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    cfg.model.backbone.init_cfg = None  # the checkpoint holds every weight
    model = MODELS.build(cfg.model)
    model.load_state_dict(load_local_checkpoint(result['checkpoint'])['state_dict'])
    return model


def recipe(cfg, args, pretrained: bool, warmup_iters: int) -> None:
    """The one optimizer and schedule of every model: AdamW (the libraries'
    SGD recipes are for hundreds of epochs), the backbone at
    ``--backbone-lr-mult`` of the learning rate where it starts from
    ImageNet weights, then :func:`iter_schedule`."""
    cfg.optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0001),
        paramwise_cfg=dict(custom_keys={'backbone': dict(
            lr_mult=args.backbone_lr_mult if pretrained else 1.0)}))
    iter_schedule(cfg, args, warmup_iters)


def iter_schedule(cfg, args, warmup_iters: int) -> None:
    """The one training schedule of every model: ``args.iters`` iterations,
    linear warm-up then cosine decay to zero, evaluated every
    ``args.val_interval`` and at the last iteration, one checkpoint kept
    at each evaluation (for resuming) besides the last."""
    warmup = min(warmup_iters, args.iters // 5)
    # mmengine's loop also evaluates at its last iteration
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=args.val_interval)
    cfg.val_cfg = dict(type='ValLoop')
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup),
        dict(type='CosineAnnealingLR', T_max=args.iters - warmup, eta_min=0, by_epoch=False,
             begin=warmup, end=args.iters),
    ][0 if warmup else 1:]
    cfg.default_hooks.checkpoint = dict(type='mbn_backbones.CheckpointHook', by_epoch=False,
                                        interval=args.val_interval, max_keep_ckpts=1,
                                        save_last=True)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.randomness = dict(seed=0)


def plot(results: dict[str, dict], key: str, label: str, title: str, path: Path) -> Path:
    """One line per model: ``key`` of its curve against iterations."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, result in results.items():
        points = [(p['iter'], p[key]) for p in result['curve'] if key in p]
        if points:
            ax.plot(*zip(*points), marker='o', markersize=3, label=name)
    ax.set_xlabel('training iteration')
    ax.set_ylabel(label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f'plot: {path}')
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table, as benchmarks/README.md shows the results."""
    def cell(value):
        return '—' if value is None else f'{value:g}' if isinstance(value, float) else str(value)
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def latency_ms(models: dict, sizes: dict[str, tuple[int, int]], rounds: int) -> dict[str, float]:
    """Median milliseconds of one image (batch 1, raw outputs: ``mode='tensor'``)
    of each model at its ``(height, width)``, the models timed in interleaved
    rounds, on the device each model is on."""
    import torch

    from common import time_interleaved

    calls = {}
    for name, model in models.items():
        device = next(model.parameters()).device
        x = torch.randn(1, 3, *sizes[name], device=device)
        model.eval()

        def call(model=model, x=x, device=device):
            with torch.no_grad():
                out = model(x, mode='tensor')
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            return out
        calls[name] = call
    if not calls:
        return {}
    timings = time_interleaved(calls, rounds=rounds, warmup=1, desc='latency')
    return {name: round(t['median_s'] * 1e3, 1) for name, t in timings.items()}
