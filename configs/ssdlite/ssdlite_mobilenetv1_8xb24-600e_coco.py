# ImageNet init, as the papers' models start from an ImageNet-trained
# backbone: add to model.backbone
#   init_cfg=dict(type='Pretrained', checkpoint='timm://mobilenetv1_100')
# (fetched once into torch hub's cache and converted on load; left out
# so that the config runs offline as written).
_base_ = './ssdlite_mobilenetv2_8xb24-600e_coco.py'

# SSDLite on MobileNetV1 (V2 paper, Table 6): conv11 (stride 16) and conv13
# (stride 32), the taps of the original MobileNet-SSD.
backbone_channels = (512, 1024)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mbn_backbones.MobileNetV1',
        out_indices=(11, 13),
        norm_cfg=_base_.norm_cfg),
    neck=dict(in_channels=backbone_channels),
    bbox_head=dict(in_channels=backbone_channels + _base_.extra_channels))
