# The embedded default: SSDLite-MobileNetV3-Large trained from scratch on the
# generated shapes dataset (tools/demo/synthetic_data.py coco,
# 4 classes, 200 train / 50 val images of 320x320) in a few minutes on a
# 2-core CPU: tools/demo/detection_demo.py runs it.
#
# Everything that differs from the COCO recipe serves that budget: a 192x192
# input with five levels, a short schedule with a high learning rate, and no
# zoom-out/crop/colour augmentation (the hue band of each shape is one of
# the cues to learn, and the objects are never tiny).
_base_ = './ssdlite_mobilenetv3-large_8xb24-600e_coco.py'

data_root = 'data/synthetic_coco/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'cross'))

input_size = 192
# Feature sizes at 192: 12 (stride 16), 6, then three extra layers: 3, 2, 1.
extra_channels = (512, 256, 256)
anchor_strides = (16, 32, 64, 96, 192)
backbone_channels = _base_.backbone_channels

# BN running statistics must settle within a few hundred iterations here,
# not the COCO recipe's tens of thousands (momentum 0.03).
norm_cfg = dict(type='BN', eps=0.001, momentum=0.1)

model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(extra_channels=extra_channels, norm_cfg=norm_cfg),
    bbox_head=dict(
        norm_cfg=norm_cfg,
        num_classes=len(metainfo['classes']),
        in_channels=backbone_channels + extra_channels,
        anchor_generator=dict(input_size=input_size, strides=anchor_strides)),
    test_cfg=dict(score_thr=0.05, max_per_img=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

# Fresh workers each epoch: a resumed run then draws the same augmentation as an
# uninterrupted one (mbn_backbones.RNGStateHook restores the main process's RNG,
# persistent workers would keep theirs). The checked dataset names bad files.
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='mbn_backbones.CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=10,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        type='mbn_backbones.CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# 10 epochs (120 iterations of 16 images) reach bbox mAP@0.5 0.96-0.99 on the
# held-out split (two runs: 0.96, 0.988) in about 2 minutes on 2 CPU cores
# (5 epochs: 0.74).
max_epochs = 10
randomness = dict(seed=0)
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', begin=0, T_max=max_epochs, end=max_epochs,
         by_epoch=True, eta_min=0),
]
# lr 0.2 diverges; 0.05 needs about twice the epochs for the same mAP
optim_wrapper = dict(optimizer=dict(lr=0.1))
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None))
log_processor = dict(window_size=10)
