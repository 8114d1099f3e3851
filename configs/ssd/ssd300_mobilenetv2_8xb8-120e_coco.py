# ImageNet init, as the papers' models start from an ImageNet-trained
# backbone: add to model.backbone
#   init_cfg=dict(type='Pretrained', checkpoint='torchvision://mobilenet_v2')
# (fetched once into torch hub's cache and converted on load; left out
# so that the config runs offline as written).
_base_ = 'mmdet::ssd/ssd300_coco.py'
custom_imports = dict(imports=['mbn_backbones'], allow_failed_imports=False)
# mmdet's runtime, with our runner and checkpoint hook (docs/architecture.md)
runner_type = 'mbn_backbones.Runner'
default_hooks = dict(checkpoint=dict(type='mbn_backbones.CheckpointHook'))

# SSD300 with MobileNetV2 in place of VGG16: the stride-8 level is the
# expansion of the first block of row 3 (192 channels, before its stride-2
# depthwise conv), the stride-16 level the last conv (1280) with the
# stride-32 rows dilated (output_stride=16), keeping SSD300's extra layers
# and anchors (feature maps 38, 19, 10, 5, 3, 1).
backbone_channels = (192, 1280)
# SSD's own extra layers, unchanged
extra_channels = tuple(_base_.model.neck.out_channels[len(_base_.model.neck.in_channels):])
feature_channels = backbone_channels + extra_channels

model = dict(
    # VGG16 came from Caffe (std 1); the MobileNets expect unit variance.
    data_preprocessor=dict(std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,
        type='mbn_backbones.MobileNetV2',
        out_indices=('3.expand', 7),
        output_stride=16),
    # L2Norm rescaled VGG's conv4_3 (SSD paper, section 3.1); BN features
    # need no rescaling.
    neck=dict(in_channels=backbone_channels, out_channels=feature_channels, l2_norm_scale=None),
    # mbn_backbones.SSDHead: mmdet's SSDHead, able to predict under mmdet 3.3.0
    bbox_head=dict(type='mbn_backbones.SSDHead', in_channels=feature_channels))
