"""AdaptFormer (Chen et al., 2022): a parallel bottleneck D -> r -> D with ReLU and a scale.

In a transformer block it sits beside the MLP: x <- x + MLP(norm2(x)) + s * up(relu(down(x))).
Pure torch, for comparing MoPPA with an adapter baseline on the same frozen backbones.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class AdaptFormerAdapter(nn.Module):
    """The AdaptFormer bottleneck. ``forward`` returns the **delta** only.

    Returning the delta (not x + delta) is what the parallel placement needs: the caller adds
    it to the block's residual sum next to the MLP branch. The up-projection (weight and bias)
    is zero-initialised, so the delta is exactly zero at step 0.

    Trainable parameters: ``2 * D * r + r + D``, plus 1 when the scale is learnable.

    Args:
        dim: Token width D.
        bottleneck: Hidden width r >= 1.
        scale: Initial value of the scale s (AdaptFormer uses 0.1).
        learnable_scale: Train s as a scalar parameter; otherwise it is a fixed float.
        dropout: Dropout probability after the ReLU (0 disables it).
    """

    def __init__(self, dim: int, bottleneck: int = 64, scale: float = 0.1,
                 learnable_scale: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f'AdaptFormer bottleneck must be >= 1, got {bottleneck}')
        self.dim = dim
        self.bottleneck = bottleneck
        self.init_scale = scale
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Linear(bottleneck, dim)
        self.scale: nn.Parameter | float = (nn.Parameter(torch.tensor(float(scale)))
                                            if learnable_scale else float(scale))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As AdaptFormer's code: Kaiming-uniform down weight, zeros on both biases and on up."""
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        if isinstance(self.scale, nn.Parameter):
            with torch.no_grad():
                self.scale.fill_(self.init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's update.

        Args:
            x: Tokens of shape (B, N, D) (any leading shape works).

        Returns:
            The delta s * up(dropout(relu(down(x)))), of the shape of ``x``; zero at init.
        """
        return self.up(self.dropout(self.act(self.down(x)))) * self.scale

    def extra_repr(self) -> str:
        learnable = isinstance(self.scale, nn.Parameter)
        return f'dim={self.dim}, bottleneck={self.bottleneck}, learnable_scale={learnable}'
