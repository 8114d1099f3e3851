# LR-ASPP on MobileNetV2 (not in the papers): the same head on V2's stride-8
# row 2 (32 channels) and its last 1x1 conv (1280 channels), the last stages
# dilated to output stride 16. V2 indices are mmdet's (0-6 rows, 7 last conv).
# ImageNet init, as the papers' models start from an ImageNet-trained
# backbone: add to model.backbone
#   init_cfg=dict(type='Pretrained', checkpoint='torchvision://mobilenet_v2')
# (fetched once into torch hub's cache and converted on load; left out
# so that the config runs offline as written).
_base_ = './lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
low_index, high_index = 2, 7
low_channels, high_channels = 32, 1280
model = dict(
    backbone=dict(_delete_=True, type='mbn_backbones.MobileNetV2', output_stride=16,
                  out_indices=(low_index, high_index), norm_cfg=_base_.norm_cfg),
    decode_head=dict(in_channels=(low_channels, high_channels)))
