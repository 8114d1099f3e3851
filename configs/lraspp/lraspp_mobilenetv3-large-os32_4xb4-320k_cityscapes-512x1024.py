# As the OS16 config, the last stage not dilated (output stride 32): the V3
# paper's cheaper variant (Table 8: 7.74B MAdds at 1024x2048, 72.0 test mIoU).
# No ImageNet init: no released ImageNet MobileNetV3 has the reduced tail
# (torchvision trains its reduced-tail SSDLite320 from scratch too).
_base_ = './lraspp_mobilenetv3-large-os16_4xb4-320k_cityscapes-512x1024.py'
model = dict(backbone=dict(output_stride=32))
