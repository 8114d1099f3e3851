"""Heads for OpenMMLab detectors and segmentors."""
from .ssd_head import SSDHead  # noqa: F401
from .ssdlite_head import DefaultBoxGenerator, SSDLiteAnchorGenerator, SSDLiteHead  # noqa: F401
from .lraspp_head import LRASPPHead  # noqa: F401
