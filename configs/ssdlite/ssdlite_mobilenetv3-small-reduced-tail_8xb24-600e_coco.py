# No ImageNet init: no released ImageNet MobileNetV3 has the reduced tail
# (torchvision trains its reduced-tail SSDLite320 from scratch too).
_base_ = './ssdlite_mobilenetv3-small_8xb24-600e_coco.py'

# V3 paper, section 6.1.1: the layers between C4 and C5 keep half their
# channels; the C5 tap shrinks to 288.
backbone_channels = (288, 288)
model = dict(
    backbone=dict(reduced_tail=True),
    neck=dict(in_channels=backbone_channels),
    bbox_head=dict(in_channels=backbone_channels + _base_.extra_channels))
