# LR-ASPP-MobileNetV3-Large (the Cityscapes model: reduced tail, OS16, 19
# trainIds) from scratch on CamVid converted to Cityscapes trainIds; one GPU.
# benchmarks/camvid_train.py runs it (shorter) and reports the mIoU.
_base_ = [
    '../_base_/models/lraspp_mobilenetv3-large.py',
    '../_base_/datasets/camvid_cityscapes.py',
    '../_base_/default_runtime_seg.py',
]
crop_size = (360, 480)
norm_cfg = dict(type='BN', eps=0.001, momentum=0.1, requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg))

max_iters = 20000
# from scratch on ~400 frames: AdamW converges where SGD at lr 0.01 crawls
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.002, betas=(0.9, 0.999), weight_decay=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=200),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=200, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(interval=2000, max_keep_ckpts=2))
