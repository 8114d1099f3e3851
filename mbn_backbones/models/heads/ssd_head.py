"""mmdet's ``SSDHead``, able to predict under mmdet 3.3.0.

mmdet 3.3.0's ``SSDHead`` fails in ``predict`` with ``AttributeError:
'SSDHead' object has no attribute 'loss_cls'``:
``BaseDenseHead._predict_by_feat_single`` gained, in 3.3.0, the line
``getattr(self.loss_cls, 'custom_cls_channels', False)`` for V3Det's
custom-channel losses, whose ``getattr`` default covers a loss without that
flag, not a head without a loss. ``AnchorHead.__init__`` is the only place
that builds ``loss_cls``, and ``SSDHead.__init__`` skips it on purpose
(``super(AnchorHead, self).__init__``): SSD computes its softmax
cross-entropy with hard negative mining inline, in ``loss_by_feat_single``.

:class:`SSDHead` sets ``loss_cls = None`` when its parent built none. That is
the truth (SSD has no loss module), and prediction then falls through to the
``use_sigmoid_cls`` test, which SSD sets to False: softmax over
``num_classes + 1`` with the background last, the scoring SSD is trained
for. Parameters and state dicts are mmdet's. mmdet's own class is left as it
is; configs opt in with ``type='mbn_backbones.SSDHead'``.
"""
from mmdet.models.dense_heads import SSDHead as MMDetSSDHead

from ...registry import MODELS
from ...upstream import check_version


@MODELS.register_module()
class SSDHead(MMDetSSDHead):
    """mmdet's ``SSDHead`` with ``loss_cls = None``, so that it predicts under mmdet 3.3.0.

    Arguments are mmdet's ``SSDHead``'s.
    """

    def __init__(self, *args, **kwargs) -> None:
        check_version('mmdet', '3.3.0', 'mbn_backbones.SSDHead',
                      "whether mmdet's SSDHead still lacks loss_cls in predict (if it "
                      "predicts, type='SSDHead' is enough)")
        super().__init__(*args, **kwargs)
        if not hasattr(self, 'loss_cls'):
            self.loss_cls = None
