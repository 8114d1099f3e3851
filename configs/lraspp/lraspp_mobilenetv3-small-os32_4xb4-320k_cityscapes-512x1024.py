# V3-Small, last stage not dilated (output stride 32): paper Table 8, 2.06B MAdds.
# No ImageNet init: no released ImageNet MobileNetV3 has the reduced tail
# (torchvision trains its reduced-tail SSDLite320 from scratch too).
_base_ = './lraspp_mobilenetv3-small-os16_4xb4-320k_cityscapes-512x1024.py'
model = dict(backbone=dict(output_stride=32))
