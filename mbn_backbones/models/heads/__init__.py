"""Heads for OpenMMLab detectors and segmentors."""
from .ssdlite_head import DefaultBoxGenerator, SSDLiteAnchorGenerator, SSDLiteHead  # noqa: F401
from .lraspp_head import LRASPPHead  # noqa: F401
