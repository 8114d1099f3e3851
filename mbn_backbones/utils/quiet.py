"""Hiding upstream messages that a user of our tools cannot act on.

Nothing here runs on import: ``tools/train.py``, ``tools/test.py``, the demos
and the other tools call :func:`quiet_upstream_noise` from their entry points,
and a user's own script may too. Each filter names one message known to be
harmless with our configs and the pinned versions (mmengine 0.10.7, mmdet
3.3.0, mmsegmentation 1.2.2, setuptools < 81), so every other warning still
shows. With other versions, check that the messages below still mean what
their comments say.
"""
import logging
import re
import warnings

# Python warnings, matched at the start of the message.
KNOWN_WARNINGS = (
    # mmengine's config loader imports pkg_resources (for `mmdet::` bases), which setuptools deprecates
    'pkg_resources is deprecated',
    # a visualizer built outside a Runner has no folder to save to; our tools draw into files they name
    "Failed to add <class 'mmengine.visualization.vis_backend.LocalVisBackend'>",
    # mmseg's decode heads call mmseg's own deprecated builder
    '``build_loss`` would be deprecated soon',
    # mmseg's CrossEntropyLoss default, which mmseg's LR-ASPP configs and ours keep
    'Default ``avg_non_ignore`` is False',
    # SegVisualizationHook's default, draw=False: nothing is drawn during training, as intended
    'The draw is False, it means that the hook for visualization will not take effect',
)
# Messages mmengine logs at WARNING level through a Runner's logger.
KNOWN_LOG_MESSAGES = (
    # mmengine's CheckpointHook calls mmengine's own deprecated FileClient
    '"FileClient" will be deprecated in future',
    '"HardDiskBackend" is the alias of "LocalBackend"',
    # mmseg's IoUMetric has no default prefix; its results are named mIoU, aAcc, ...
    'The prefix is not set in metric class',
)


class _KnownLogMessages(logging.Filter):
    pattern = re.compile('|'.join(re.escape(m) for m in KNOWN_LOG_MESSAGES))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_upstream_noise(logger: logging.Logger = None) -> None:
    """Ignore the :data:`KNOWN_WARNINGS` from now on in this process and, with
    ``logger`` (a Runner's ``runner.logger``), drop the :data:`KNOWN_LOG_MESSAGES`
    it would print. Call it before loading a config, and again with the
    Runner's logger once the Runner is built."""
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings('ignore', message=re.escape(message), category=UserWarning)
    if logger is not None and not any(isinstance(f, _KnownLogMessages) for f in logger.filters):
        logger.addFilter(_KnownLogMessages())
