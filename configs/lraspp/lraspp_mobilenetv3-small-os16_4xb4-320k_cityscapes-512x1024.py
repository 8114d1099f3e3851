# LR-ASPP, MobileNetV3-Small (reduced last block, output stride 16). Paper
# (V3, Table 7): 68.38 mIoU on val, 0.47M parameters, 2.90B MAdds at 1024x2048.
# Taps: row 3 (stride 8, 24 channels) and the last 1x1 conv (288 channels
# with the reduced tail).
# No ImageNet init: no released ImageNet MobileNetV3 has the reduced tail
# (torchvision trains its reduced-tail SSDLite320 from scratch too).
_base_ = './lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
low_index, high_index = 3, 12
low_channels, high_channels = 24, 288
model = dict(
    backbone=dict(arch='small', out_indices=(low_index, high_index)),
    decode_head=dict(in_channels=(low_channels, high_channels)))
