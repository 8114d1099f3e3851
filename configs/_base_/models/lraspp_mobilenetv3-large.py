# LR-ASPP on MobileNetV3-Large as in the V3 paper's Cityscapes experiments
# (section 6.4, Tables 7-8): reduced last block, last stage dilated to output
# stride 16, 128 head filters. The head reads the stride-8 output of row 6
# (40 channels) and the last 1x1 conv (480 channels with the reduced tail).
# Plain BN: see sync_bn in default_runtime_seg.py.
norm_cfg = dict(type='BN', eps=0.001, requires_grad=True)
low_index, high_index = 6, 16
low_channels, high_channels = 40, 480

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mbn_backbones.MobileNetV3',
        arch='large',
        reduced_tail=True,
        output_stride=16,
        out_indices=(low_index, high_index),
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='mbn_backbones.LRASPPHead',
        in_channels=(low_channels, high_channels),
        in_index=(0, 1),
        channels=128,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        act_cfg=dict(type='ReLU'),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
