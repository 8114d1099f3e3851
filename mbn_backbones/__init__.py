"""MobileNet backbones for OpenMMLab."""
