"""torchvision's LR-ASPP head as an mmseg decode head, for
``camvid_finetune.py``'s comparison: the loss, the resizing to the labels and
the training loop stay mmseg's, only the head is torchvision's.

Importing this module registers ``TorchvisionLRASPPHead`` in mmseg's model
registry (a benchmark's part, not the package's). The configs the benchmark
saves import it themselves, so that they can be evaluated again::

    PYTHONPATH=benchmarks .venv/bin/python tools/test.py \\
        work_dirs/camvid_finetune/torchvision_head/config.py \\
        work_dirs/camvid_finetune/torchvision_head/iter_150.pth
"""
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torchvision.models.segmentation.lraspp import LRASPPHead


@MODELS.register_module(force=True)  # importing it twice (by path and by name) is harmless
class TorchvisionLRASPPHead(BaseDecodeHead):
    """``torchvision.models.segmentation.lraspp.LRASPPHead(low, high,
    num_classes, channels)`` on the ``(low, high)`` features of ``in_index``;
    mmseg's classifier (``conv_seg``) and dropout are not used, and the head
    keeps torchvision's initialisation."""

    def __init__(self, in_channels, in_index, channels, **kwargs):
        kwargs.setdefault('input_transform', 'multiple_select')
        super().__init__(in_channels=list(in_channels), in_index=list(in_index),
                         channels=channels, **kwargs)
        del self.conv_seg, self.dropout
        self.head = LRASPPHead(in_channels[0], in_channels[1], self.out_channels, channels)

    def forward(self, inputs):
        low, high = self._transform_inputs(inputs)
        return self.head(dict(low=low, high=high))

    def init_weights(self):  # torchvision's own, as built
        pass
