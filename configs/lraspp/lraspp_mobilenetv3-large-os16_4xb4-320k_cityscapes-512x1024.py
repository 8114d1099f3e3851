# LR-ASPP, MobileNetV3-Large (reduced last block, output stride 16), trained
# from scratch on Cityscapes with mmseg's LR-ASPP M-V3 schedule. Paper (V3,
# Table 7): 72.36 mIoU on val, 1.51M parameters, 9.74B MAdds at 1024x2048.
# The global-pooling gate works at any size, so both the whole-image test
# below and sliding windows (test_cfg=dict(mode='slide', crop_size=crop_size,
# stride=(341, 341))) are valid.
# No ImageNet init: no released ImageNet MobileNetV3 has the reduced tail
# (torchvision trains its reduced-tail SSDLite320 from scratch too).
_base_ = [
    '../_base_/models/lraspp_mobilenetv3-large.py',
    '../_base_/datasets/cityscapes_512x1024.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/seg_sgd-poly_320k.py',
]
crop_size = (512, 1024)
model = dict(data_preprocessor=dict(size=crop_size))
