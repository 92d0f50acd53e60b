"""LoRA (Hu et al., 2021) on a frozen ``nn.Linear``: y = W x + b + (alpha / r) * B A x.

Pure torch, for comparing MoPPA with a low-rank baseline on the same frozen backbones.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable rank-r update.

    A (r, in) gets PEFT's default Kaiming-uniform init and B (out, r) is zero, so the wrapped
    layer's output is unchanged at step 0. Trainable parameters: ``r * (in + out)``; the wrapped
    layer's weight and bias are frozen (``requires_grad=False``) and not counted.

    Args:
        base: The pre-trained layer to adapt; it is frozen in place.
        rank: Rank r >= 1 of the update.
        alpha: Scaling numerator; the update is multiplied by ``alpha / rank``.
        dropout: Dropout probability on the update's input (0 disables it).
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 8.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f'LoRA rank must be >= 1, got {rank}')
        self.base = base.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.empty(base.out_features, rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def reset_parameters(self) -> None:
        """Kaiming-uniform A (as PEFT), zero B: the update is zero; the base is untouched."""
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def lora_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The low-rank update alone, (alpha / r) * B A dropout(x).

        Args:
            x: Tensor of shape (..., in_features).

        Returns:
            Tensor of shape (..., out_features).
        """
        # Scaling the rank-r intermediate, not the (..., out) result, saves a full-size pass.
        hidden = F.linear(self.dropout(x), self.lora_a) * self.scaling
        return F.linear(hidden, self.lora_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen layer plus update.

        Args:
            x: Tensor of shape (..., in_features).

        Returns:
            Tensor of shape (..., out_features).
        """
        return self.base(x) + self.lora_delta(x)

    def extra_repr(self) -> str:
        return f'rank={self.rank}, alpha={self.alpha}'
