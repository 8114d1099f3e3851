"""Checks a config before a Runner is built from it.

mmengine passes every key of a ``dict(type=...)`` to the class as a keyword
argument; a misspelt key (``widen_factr=0.5``) fails deep inside the build
with ``__init__() got an unexpected keyword argument`` and no hint, or, for a
class that accepts ``**kwargs``, is silently ignored.
"""
import difflib
import inspect


class ConfigError(ValueError):
    """A config entry that cannot work; the message names its path in the config."""


def _our_class(type_):
    if inspect.isclass(type_):
        return type_ if type_.__module__.startswith('mbn_backbones.') else None
    if not isinstance(type_, str) or not type_.startswith('mbn_backbones.'):
        return None
    from ..registry import DATASETS, HOOKS, MODELS, TASK_UTILS
    name = type_.split('.', 1)[1]
    for registry in (MODELS, TASK_UTILS, DATASETS, HOOKS):
        cls = registry.get(name)
        if cls is not None:
            return cls
    return None


def _accepted(cls):
    """Keyword names ``cls(...)`` accepts, or None when it takes ``**kwargs``."""
    names = []
    for klass in inspect.getmro(cls):
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.name != 'self' and p.kind in (
            p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return list(dict.fromkeys(names))
        # **kwargs forwarded to the parent: its names count too
    return None


def unknown_arguments(cfg, root: str = '') -> list:
    """Lines naming each key of a ``dict(type='mbn_backbones.X', ...)`` that X does not take.

    Only our own classes are checked (``type='mbn_backbones.Name'`` or the
    class itself): they say exactly which arguments they take. Others are
    left to mmengine.
    """
    problems = []

    def walk(node, path):
        if isinstance(node, dict):
            cls = _our_class(node.get('type'))
            names = _accepted(cls) if cls is not None else None
            if names is not None:
                for key in node:
                    if key in ('type', '_scope_') or key in names:
                        continue
                    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                    hint = f"; did you mean '{close[0]}'?" if close else ''
                    where = f'{path}.{key}'.lstrip('.')
                    problems.append(f'{where}: {cls.__name__} has no argument {key!r}{hint} '
                                    f'(it takes: {", ".join(names)})')
            for key, value in node.items():
                walk(value, f'{path}.{key}' if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{path}[{i}]')

    walk(cfg, root)
    return problems


def train_loop_arguments(cfg):
    """``(loop class, train_cfg keys it does not take, the keys it takes)``.

    mmengine builds the training loop only when training starts, after the
    Runner has created the work dir; this resolves the loop as
    ``Runner.build_train_loop`` does, so a tool can refuse a key first. A loop
    taking ``**kwargs`` takes everything.

    Raises:
        ConfigError: ``train_cfg.type`` names no registered loop.
    """
    from mmengine.registry import LOOPS
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

    loop_cfg = dict(cfg.get('train_cfg') or {})
    # configs inherited with ``mmdet::`` carry the registry scope of their dicts
    scope = loop_cfg.pop('_scope_', None) or cfg.get('default_scope')
    loop_type = loop_cfg.pop('type', None)
    if loop_type is None:
        loop_cls = EpochBasedTrainLoop if loop_cfg.pop('by_epoch', False) else IterBasedTrainLoop
    elif isinstance(loop_type, str):
        with LOOPS.switch_scope_and_registry(scope) as registry:
            loop_cls = registry.get(loop_type)
        if loop_cls is None:
            raise ConfigError(f'train_cfg.type {loop_type!r} is not a registered training loop')
    else:
        loop_cls = loop_type
    names = _accepted(loop_cls)
    if names is None:
        return loop_cls, [], []
    taken = [name for name in names if name not in ('runner', 'dataloader')]
    return loop_cls, [key for key in loop_cfg if key not in names], taken


def check_config(cfg) -> None:
    """Raise :class:`ConfigError` listing every unknown argument of our classes in ``cfg``."""
    problems = unknown_arguments(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
    if problems:
        raise ConfigError('unknown config keys:\n  ' + '\n  '.join(problems))
