"""LayerNorm over the channels of an NCHW map (ViTDet's LN2d)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS as MMENGINE_MODELS
from torch import nn


# Registered in MMEngine's root registry: mmcv's build_norm_layer looks norms up from there,
# and every child registry (mmdet's included) falls back to it.
@MMENGINE_MODELS.register_module('LN2d')
class LayerNorm2d(nn.LayerNorm):
    """Normalises every pixel's channel vector.

    A subclass of ``nn.LayerNorm`` so that optimizer constructors treat it as a norm (no weight
    decay with ``norm_decay_mult=0``).

    Args:
        num_features: Channels C.
        eps: Added to the variance.
    """
    _abbr_ = 'ln'

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__(num_features, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
