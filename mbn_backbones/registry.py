"""Scoped registries of mbn_backbones.

Each registry is a child of mmengine's root registry with the scope
``mbn_backbones``. mmdet and mmseg configs reach our modules as
``type='mbn_backbones.MobileNetV2'``: mmengine resolves the scope prefix
through the root registry, so our names never clash with the ``MobileNetV2``
and ``MobileNetV3`` that mmdet and mmseg register themselves (mmengine refuses a
second registration of a name in one registry).

Only registries that something of ours is registered in exist here.
"""
from mmengine import registry as _root
from mmengine.registry import Registry


def _scoped(parent: Registry, location: str) -> Registry:
    return Registry(parent.name, parent=parent, scope='mbn_backbones', locations=[location])


MODELS = _scoped(_root.MODELS, 'mbn_backbones.models')
# anchor generators and other helpers that heads build from config
TASK_UTILS = _scoped(_root.TASK_UTILS, 'mbn_backbones.models')
DATASETS = _scoped(_root.DATASETS, 'mbn_backbones.datasets')
HOOKS = _scoped(_root.HOOKS, 'mbn_backbones.engine')
# configs name our runner with runner_type='mbn_backbones.Runner'
RUNNERS = _scoped(_root.RUNNERS, 'mbn_backbones.engine')
METRICS = _scoped(_root.METRICS, 'mbn_backbones.evaluation')
