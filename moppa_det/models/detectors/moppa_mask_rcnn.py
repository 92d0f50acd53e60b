"""Mask R-CNN with its backbone's adapters connected (kept for configs of the first release).

Any detector gets the same through ``attach_adapter_hooks`` (done by the ``AdapterHostHook`` of
the moppa_det runtime), so new configs use plain ``MaskRCNN`` / ``CascadeRCNN``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS

from ..moppa import RouteRegConfig
from .adapter_hooks import attach_adapter_hooks
from .checks import check_neck_fits_backbone


@MODELS.register_module()
class MoPPAMaskRCNN(MaskRCNN):
    """Mask R-CNN + the adapters' auxiliary losses (``loss_route`` for MoPPA).

    Args:
        route_reg: Options of :class:`RouteRegConfig` for the backbone's MoPPA adapter
            (kind, weight, decay_fraction); ``None`` keeps the adapter's own.
        **kwargs: Those of ``mmdet.models.MaskRCNN``.
    """

    def __init__(self, *args: Any, route_reg: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_neck_fits_backbone(self.backbone, getattr(self, 'neck', None))
        attach_adapter_hooks(self)
        if route_reg is not None:
            self._set_route_reg(RouteRegConfig.from_dict(route_reg))

    def _set_route_reg(self, route_reg: RouteRegConfig) -> None:
        adapters = getattr(self.backbone, 'adapters', {})
        moppa = adapters['moppa'] if 'moppa' in adapters else None
        if moppa is None:
            raise ValueError('model.route_reg is given but model.backbone has no MoPPA adapter')
        moppa.options = dataclasses.replace(moppa.options, route_reg=route_reg)
