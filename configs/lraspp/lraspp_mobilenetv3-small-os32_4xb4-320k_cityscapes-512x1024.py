# V3-Small, last stage not dilated (output stride 32): paper Table 8, 2.06B MAdds.
_base_ = './lraspp_mobilenetv3-small-os16_4xb4-320k_cityscapes-512x1024.py'
model = dict(backbone=dict(output_stride=32))
