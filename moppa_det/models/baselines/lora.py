"""LoRA (Hu et al., 2021) on a frozen ``nn.Linear``: y = W x + b + (alpha / r) * B A x.

Pure torch. :class:`LoRAUpdate` is the rank-r update alone (what the ``LoRA`` adapter adds to a
hooked pre-trained layer's output); :class:`LoRALinear` wraps a frozen layer with it, for the
stand-alone analysis tools.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRAUpdate(nn.Module):
    """The trainable rank-r update (alpha / r) * B A x of a linear layer ``in -> out``.

    A (r, in) gets PEFT's default Kaiming-uniform init and B (out, r) is zero, so the update is
    exactly zero at step 0. Trainable parameters: ``r * (in + out)``.

    Args:
        in_features: Input width of the adapted layer.
        out_features: Output width of the adapted layer.
        rank: Rank r >= 1 of the update.
        alpha: Scaling numerator; the update is multiplied by ``alpha / rank``.
        dropout: Dropout probability on the update's input (0 disables it).
    """

    def __init__(self, in_features: int, out_features: int, rank: int = 8, alpha: float = 8.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f'LoRA rank must be >= 1, got {rank}')
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.empty(out_features, rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform A (as PEFT), zero B: the update is zero."""
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def lora_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The low-rank update, (alpha / r) * B A dropout(x).

        Args:
            x: Tensor of shape (..., in_features).

        Returns:
            Tensor of shape (..., out_features).
        """
        # Scaling the rank-r intermediate, not the (..., out) result, saves a full-size pass.
        hidden = F.linear(self.dropout(x), self.lora_a) * self.scaling
        return F.linear(hidden, self.lora_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`lora_delta`: (..., in_features) -> (..., out_features)."""
        return self.lora_delta(x)

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'rank={self.rank}, alpha={self.alpha}')


class LoRALinear(LoRAUpdate):
    """A frozen linear layer plus a trainable :class:`LoRAUpdate`.

    The wrapped layer's output is unchanged at step 0. Trainable parameters: ``r * (in + out)``;
    the wrapped layer's weight and bias are frozen (``requires_grad=False``) and not counted.

    Args:
        base: The pre-trained layer to adapt; it is frozen in place.
        rank: Rank r >= 1 of the update.
        alpha: Scaling numerator; the update is multiplied by ``alpha / rank``.
        dropout: Dropout probability on the update's input (0 disables it).
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 8.0,
                 dropout: float = 0.0) -> None:
        super().__init__(base.in_features, base.out_features, rank, alpha, dropout)
        self.base = base.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen layer plus update.

        Args:
            x: Tensor of shape (..., in_features).

        Returns:
            Tensor of shape (..., out_features).
        """
        return self.base(x) + self.lora_delta(x)
