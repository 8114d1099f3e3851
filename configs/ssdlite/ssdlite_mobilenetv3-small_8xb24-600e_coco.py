# ImageNet init, as the papers' models start from an ImageNet-trained
# backbone: add to model.backbone
#   init_cfg=dict(type='Pretrained', checkpoint='torchvision://mobilenet_v3_small')
# (fetched once into torch hub's cache and converted on load; left out
# so that the config runs offline as written).
_base_ = './ssdlite_mobilenetv2_8xb24-600e_coco.py'

# SSDLite on MobileNetV3-Small (V3 paper, section 6.2): C4 is the expansion
# of the 9th bottleneck (the first stride-32 one, 288 channels at stride
# 16), C5 the last 1x1 conv (576).
backbone_channels = (288, 576)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mbn_backbones.MobileNetV3',
        arch='small',
        out_indices=('9.expand', 12),
        norm_cfg=_base_.norm_cfg),
    neck=dict(in_channels=backbone_channels),
    bbox_head=dict(in_channels=backbone_channels + _base_.extra_channels))
