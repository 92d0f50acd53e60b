"""SSF (Lian et al., 2022): a per-channel scale and shift, y = x * gamma + beta.

Pure torch. The ``SSF`` adapter puts one :class:`SSFAffine` after each module it adapts (the
patch embedding, the blocks' norms, the final norm).
"""
from __future__ import annotations

import torch
from torch import nn

SSF_INITS = ('normal', 'identity')


class SSFAffine(nn.Module):
    """Per-channel affine map on the last dimension (tokens (B, N, C) or maps (B, H, W, C)).

    Its parameters must not be weight-decayed: decay would pull the scale towards 0 (a dead
    channel), not towards the identity; ``no_weight_decay`` tells the optimizer constructor.
    Trainable parameters: ``2 * C``.

    Args:
        channels: Channel count C.
        init: 'normal' (SSF's and the MoPPA authors' init: gamma ~ N(1, std), beta ~ N(0, std);
            not the identity) or 'identity' (gamma = 1, beta = 0).
        std: Standard deviation of the 'normal' init.
    """

    no_weight_decay = True

    def __init__(self, channels: int, init: str = 'normal', std: float = 0.02) -> None:
        super().__init__()
        if init not in SSF_INITS:
            raise ValueError(f'SSF init must be one of {SSF_INITS}, got {init!r}')
        self.channels, self.init, self.std = channels, init, std
        self.scale = nn.Parameter(torch.empty(channels))
        self.shift = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == 'identity':
            nn.init.ones_(self.scale)
            nn.init.zeros_(self.shift)
        else:
            nn.init.normal_(self.scale, mean=1.0, std=self.std)
            nn.init.normal_(self.shift, mean=0.0, std=self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x * gamma + beta per channel.

        Args:
            x: Tensor of shape (..., C), channels last.

        Returns:
            Tensor of the shape and dtype of ``x``.
        """
        if x.shape[-1] != self.channels:
            raise ValueError(f'SSF: expected {self.channels} channels on the last dimension, got '
                             f'a tensor of shape {tuple(x.shape)}')
        # addcmul keeps one fused op; the cast keeps low-precision activations low-precision.
        return torch.addcmul(self.shift, x, self.scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, init={self.init!r}'
