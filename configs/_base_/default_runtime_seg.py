# Runtime of mmseg segmentors built from mbn_backbones modules.
default_scope = 'mmseg'
custom_imports = dict(imports=['mbn_backbones'], allow_failed_imports=False)
# Checkpoints written all or nothing and read with weights_only=True; old
# checkpoints deleted only after the new one exists (docs/architecture.md).
runner_type = 'mbn_backbones.Runner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mbn_backbones.CheckpointHook', by_epoch=False, interval=32000,
                    max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))

custom_hooks = [
    # random states in checkpoints: a resumed run equals an uninterrupted one
    dict(type='mbn_backbones.RNGStateHook'),
    # stops at the first NaN/inf loss, naming the iteration, before it is saved
    dict(type='mbn_backbones.FiniteLossHook'),
    # says once, before training, when load_from or a Pretrained init_cfg
    # has heads for another number of classes (mmengine skips them quietly)
    dict(type='mbn_backbones.ClassCountHook'),
]

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

# The models use plain BN so that one GPU or the CPU trains them as written;
# under a distributed launcher mmengine's Runner turns every BN into torch's
# SyncBatchNorm (Runner.wrap_model reads cfg.sync_bn only when distributed).
sync_bn = 'torch'

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)

log_level = 'INFO'
load_from = None
resume = False
