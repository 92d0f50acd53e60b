"""Mask R-CNN whose loss includes the MoPPA units' route regularization."""
from __future__ import annotations

from typing import Any

import torch
from mmdet.models.detectors import MaskRCNN
from mmdet.registry import MODELS
from mmdet.structures import SampleList

from .route_regularized import RouteRegularizedMixin, check_neck_fits_backbone


@MODELS.register_module()
class MoPPAMaskRCNN(RouteRegularizedMixin, MaskRCNN):
    """Mask R-CNN + ``loss_route``.

    Args:
        route_reg: Options of :class:`RouteRegConfig` (kind, weight, decay_fraction).
        **kwargs: Those of ``mmdet.models.MaskRCNN``.
    """

    def __init__(self, *args: Any, route_reg: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init_route_reg(route_reg)
        check_neck_fits_backbone(self.backbone, getattr(self, 'neck', None))

    def loss(self, batch_inputs: torch.Tensor,
             batch_data_samples: SampleList) -> dict[str, torch.Tensor]:
        losses = super().loss(batch_inputs, batch_data_samples)
        losses.update(self.route_loss_terms())
        return losses
