# SSDLite with MobileNetV2 at 320x320 (MobileNetV2 paper, section 6.2).
input_size = 320
# BN of the TF Object Detection API's SSDLite (decay 0.97, eps 1e-3).
norm_cfg = dict(type='BN', eps=0.001, momentum=0.03)

# The first SSDLite level is the expansion of the first block of the
# stride-32 row (576 channels, computed at stride 16), the second the last
# conv (1280): MobileNetV2(out_indices=('5.expand', 7)).out_channels.
backbone_channels = (576, 1280)
extra_channels = (512, 256, 256, 128)
# Feature sizes at 320: 20, 10, 5, 3, 2, 1; one anchor cell per feature pixel.
anchor_strides = (16, 32, 64, 107, 160, 320)

model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='mbn_backbones.MobileNetV2',
        out_indices=('5.expand', 7),
        norm_cfg=norm_cfg),
    neck=dict(
        type='mbn_backbones.SSDLiteNeck',
        in_channels=backbone_channels,
        extra_channels=extra_channels,
        norm_cfg=norm_cfg,
        act_cfg=dict(type='ReLU6')),
    bbox_head=dict(
        type='mbn_backbones.SSDLiteHead',
        num_classes=80,
        in_channels=backbone_channels + extra_channels,
        norm_cfg=norm_cfg,
        act_cfg=dict(type='ReLU6'),
        anchor_generator=dict(
            type='mbn_backbones.SSDLiteAnchorGenerator',
            input_size=input_size,
            strides=anchor_strides,
            scale_range=(0.2, 0.95),
            ratios=(2, 3),
            reduce_lowest_level=True),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=[0.1, 0.1, 0.2, 0.2])),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.5,
            min_pos_iou=0.,
            ignore_iof_thr=-1,
            gt_max_assign_all=False),
        sampler=dict(type='PseudoSampler'),
        smoothl1_beta=1.,
        allowed_border=-1,
        pos_weight=-1,
        neg_pos_ratio=3,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=200))
