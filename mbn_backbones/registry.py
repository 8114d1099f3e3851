"""Scoped registries of mbn_backbones.

Each registry is a child of mmengine's root registry with the scope
``mbn_backbones``. mmdet and mmseg configs reach our modules as
``type='mbn_backbones.MobileNetV2'``: mmengine resolves the scope prefix
through the root registry, so our names never clash with the ``MobileNetV2``
and ``MobileNetV3`` that mmdet and mmseg register themselves (mmengine refuses a
second registration of a name in one registry).
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mbn_backbones',
                  locations=['mbn_backbones.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mbn_backbones',
                    locations=['mbn_backbones.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mbn_backbones',
                      locations=['mbn_backbones.datasets'])
# configs name our runner with runner_type='mbn_backbones.Runner'
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope='mbn_backbones',
                   locations=['mbn_backbones.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mbn_backbones',
                 locations=['mbn_backbones.engine'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mbn_backbones',
                   locations=['mbn_backbones.evaluation'])
# anchor generators and other helpers that heads build from config
TASK_UTILS = Registry('task util', parent=MMENGINE_TASK_UTILS, scope='mbn_backbones',
                      locations=['mbn_backbones.models'])
