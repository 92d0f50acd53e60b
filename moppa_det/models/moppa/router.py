"""The router of a MoPPA unit: mixing weights alpha over the priors."""
from __future__ import annotations

import torch
from torch import nn


class Router(nn.Module):
    """Softmax mixing weights over P priors.

    Modes: ``'token'`` (alpha per token from a linear map of the token), ``'sample'`` (alpha
    per sample from the mean token) and ``'uniform'`` (alpha = 1/P, no parameters). The linear
    map is zero-initialised, so every mode starts at alpha = 1/P. With one prior alpha = 1.

    Args:
        dim: Token width D.
        num_priors: Number of priors P.
        mode: One of 'token', 'sample', 'uniform'.
    """

    def __init__(self, dim: int, num_priors: int, mode: str = 'token') -> None:
        super().__init__()
        self.num_priors = num_priors
        self.mode = mode
        learned = mode in ('token', 'sample') and num_priors > 1
        self.proj = nn.Linear(dim, num_priors) if learned else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Computes the mixing weights.

        Args:
            tokens: Tensor of shape (B, N, D).

        Returns:
            alpha of shape (B, N, P) in per-token mode, else (B, 1, P); float32, sums to 1.
        """
        b = tokens.shape[0]
        if self.proj is None:
            return tokens.new_full((b, 1, self.num_priors), 1.0 / self.num_priors,
                                   dtype=torch.float32)
        if self.mode == 'sample':
            tokens = tokens.mean(dim=1, keepdim=True)
        return self.proj(tokens).float().softmax(dim=-1)
