# mmseg's LR-ASPP M-V3 schedule: SGD, lr 0.01, poly decay over 320k iterations
# (batch 4 per GPU x 4 GPUs). mmseg's own config inherits schedule_160k.py and
# sets 320k only in an mmcv-1.x `runner` key that mmengine ignores, so it
# actually stops at 160k; here the name and the loop agree.
max_iters = 320000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=32000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
