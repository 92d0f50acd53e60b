"""SimpleFPN (ViTDet): a feature pyramid built from one single-scale ViT map."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import nn


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """Turns one stride-s map into maps at s * scale for each scale factor, plus extra levels.

    Scale factor 4 is two stride-2 transposed convolutions (norm + GELU between), 2 one,
    1 the identity and 0.5 a 2x2 max-pool; each level then gets a 1x1 and a 3x3 convolution,
    each followed by ``norm_cfg`` (LN2d as in ViTDet by default; ``None`` drops it — in the
    64-channel CPU demo LN2d kept the RoI classifier from learning, see README).
    ``num_outs`` beyond the scale factors adds max-pooled levels (the RPN's P6).

    Args:
        in_channels: Channels of the backbone map (an int, or a list whose last entry is used).
        out_channels: Channels of every output level.
        scale_factors: Up/down-sampling factors of the levels, largest first; from {4, 2, 1, 0.5}.
        num_outs: Number of outputs (>= len(scale_factors)).
        norm_cfg: Norm of the convolutions: a config dict, a norm type name ('LN2d' as in
            ViTDet, the default; 'GN' needs a dict with num_groups) or None for no norm.
        init_cfg: MMEngine init config of the neck; None: Xavier-uniform convolutions
            (ViTDet's).
    """

    def __init__(self, in_channels: int | Sequence[int], out_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int = 5,
                 norm_cfg: dict | str | None = 'LN2d',
                 init_cfg: dict | list | None = None) -> None:
        super().__init__(init_cfg or dict(type='Xavier', layer='Conv2d', distribution='uniform'))
        if isinstance(norm_cfg, str):
            norm_cfg = dict(type=norm_cfg)
        if not isinstance(in_channels, int):
            in_channels = list(in_channels)[-1]
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} < {len(scale_factors)} scale factors')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.scale_factors, self.num_outs = list(scale_factors), num_outs
        self.resamplers = nn.ModuleList(
            self._resampler(scale, in_channels, norm_cfg) for scale in scale_factors)
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for scale in scale_factors:
            width = {4: in_channels // 4, 2: in_channels // 2}.get(scale, in_channels)
            self.lateral_convs.append(ConvModule(width, out_channels, 1, norm_cfg=norm_cfg,
                                                 act_cfg=None))
            self.output_convs.append(ConvModule(out_channels, out_channels, 3, padding=1,
                                                norm_cfg=norm_cfg, act_cfg=None))

    @staticmethod
    def _resampler(scale: float, channels: int, norm_cfg: dict | None) -> nn.Module:
        if scale == 4:
            layers = [nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)]
            if norm_cfg is not None:
                layers.append(build_norm_layer(norm_cfg, channels // 2)[1])
            layers += [nn.GELU(), nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2)]
            return nn.Sequential(*layers)
        if scale == 2:
            return nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)
        if scale == 1:
            return nn.Identity()
        if scale == 0.5:
            return nn.MaxPool2d(2, stride=2)
        raise ValueError(f'SimpleFPN: scale factor {scale} is not one of 4, 2, 1, 0.5')

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Builds the pyramid.

        Args:
            inputs: Backbone outputs; the last one, (B, C, H, W), is used.

        Returns:
            ``num_outs`` maps of shape (B, out_channels, H * f, W * f) for each scale factor
            f (the 0.5 level is floor-pooled), then the extra levels, each half the previous.
        """
        x = inputs[-1]
        outs = [out_conv(lateral(resample(x))) for resample, lateral, out_conv in
                zip(self.resamplers, self.lateral_convs, self.output_convs)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
