# LR-ASPP on MobileNetV1 (not in the papers): the head on conv5 (stride 8,
# 256 channels) and conv13 (1024 channels), conv12-13 dilated to output
# stride 16. V1 indices: 0 stem, k = the paper's conv k.
# ImageNet init, as the papers' models start from an ImageNet-trained
# backbone: add to model.backbone
#   init_cfg=dict(type='Pretrained', checkpoint='timm://mobilenetv1_100')
# (fetched once into torch hub's cache and converted on load; left out
# so that the config runs offline as written).
_base_ = './lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
low_index, high_index = 5, 13
low_channels, high_channels = 256, 1024
model = dict(
    backbone=dict(_delete_=True, type='mbn_backbones.MobileNetV1', output_stride=16,
                  out_indices=(low_index, high_index), norm_cfg=_base_.norm_cfg),
    decode_head=dict(in_channels=(low_channels, high_channels)))
