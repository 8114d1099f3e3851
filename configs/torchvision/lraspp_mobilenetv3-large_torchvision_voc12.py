# torchvision's trained lraspp_mobilenet_v3_large (21 Pascal VOC classes,
# trained on the COCO images holding them; 57.9 mIoU on torchvision's
# VOC-label subset of COCO val2017) as an mmseg segmentor of our modules,
# evaluated on Pascal VOC 2012 val, mmseg's dataset with these classes (other
# images: expect another number). Weights from
# tools/model_converters/torchvision_models2mbn.py; tests/test_torchvision_models.py
# checks that the converted model gives torchvision's class maps.
_base_ = ['../_base_/models/lraspp_mobilenetv3-large.py', '../_base_/default_runtime_seg.py']

# The base's ImageNet normalisation is torchvision's too (its
# SemanticSegmentation preset). Its backbone is mobilenet_v3_large(dilated=True):
# the full tail (no reduction), output stride 16, and the block that would
# stride to 32 dilated too; LR-ASPP reads its feature 4 (the first stride-8
# block, 40 channels) and the last conv (960).
low_index, high_index = 4, 16
low_channels, high_channels = 40, 960
model = dict(
    backbone=dict(
        reduced_tail=False,
        dilate_strided_block=True,
        out_indices=(low_index, high_index),
        norm_cfg=dict(type='BN', eps=0.001, momentum=0.01)),
    decode_head=dict(
        in_channels=(low_channels, high_channels),
        dropout_ratio=0.,   # torchvision's head has no dropout
        num_classes=21,
        norm_cfg=dict(type='BN', eps=1e-5)))   # torchvision's BatchNorm2d defaults

# torchvision evaluates at a shorter side of 520; mmseg scores at the original size
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 520), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='PascalVOCDataset',
        data_root='data/VOCdevkit/VOC2012',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_cfg = dict(type='TestLoop')
val_dataloader = test_dataloader
val_evaluator = test_evaluator
val_cfg = dict(type='ValLoop')
