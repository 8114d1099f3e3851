# No ImageNet init: no released ImageNet MobileNetV3 has the reduced tail
# (torchvision trains its reduced-tail SSDLite320 from scratch too).
_base_ = './ssdlite_mobilenetv3-large_8xb24-600e_coco.py'

# V3 paper, section 6.1.1: for detection the layers between C4 and C5 keep
# half their channels; the C5 tap shrinks to 480 (torchvision's
# ssdlite320_mobilenet_v3_large does the same).
backbone_channels = (672, 480)
model = dict(
    backbone=dict(reduced_tail=True),
    neck=dict(in_channels=backbone_channels),
    bbox_head=dict(in_channels=backbone_channels + _base_.extra_channels))
