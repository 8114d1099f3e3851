# Runtime of mmdet detectors built from mbn_backbones modules.
default_scope = 'mmdet'
custom_imports = dict(imports=['mbn_backbones'], allow_failed_imports=False)
# Checkpoints written all or nothing and read with weights_only=True; old
# checkpoints deleted only after the new one exists (docs/architecture.md).
runner_type = 'mbn_backbones.Runner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mbn_backbones.CheckpointHook', interval=5, max_keep_ckpts=3,
                    save_best='coco/bbox_mAP', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))

custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
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

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None
resume = False
