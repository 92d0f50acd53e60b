"""RLRR (residual low-rank rescaling): W' = W + W * (s_out s_in^T) elementwise, b' = b + db.

Pure torch. :class:`RLRRUpdate` computes the update alone, y' - y = (W * s_out s_in^T) x + db,
for a frozen weight it is handed (the ``RLRR`` adapter gets it from the hooked layer), so the
pre-trained weight is never a parameter of the update.

Init as in the MoPPA authors' code (feufhd/MoPDO), which applies ``nn.init.kaiming_uniform_``
(a=0, fan_in mode) to s_in stored as (1, in) and s_out stored as (out, 1): fan_in is ``in`` and
1, so s_in ~ U(-sqrt(6 / in), sqrt(6 / in)) and s_out ~ U(-sqrt(6), sqrt(6)); db = 0. That is
**not** an identity at init: every weight starts scaled by its own 1 + s_out[o] s_in[i]
(|s_out s_in| up to 6 / sqrt(in), about 0.22 at in = 768). ``init='identity'`` keeps their s_in
and zeroes s_out: the layer starts as the pre-trained one and both scales still learn (the
gradient of s_out is proportional to s_in, non-zero).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

RLRR_INITS = ('kaiming', 'identity')


class RLRRUpdate(nn.Module):
    """The scales and bias shift of one linear layer ``in -> out`` (or of some of its rows).

    No weight decay (``no_weight_decay``): the scales are multiplicative factors on a frozen
    weight, as SSF's. Trainable parameters: ``in + 2 * out``.

    Args:
        in_features: Input width of the layer.
        out_features: Number of output rows adapted.
        init: 'kaiming' (the authors') or 'identity' (s_out = 0).
    """

    no_weight_decay = True

    def __init__(self, in_features: int, out_features: int, init: str = 'kaiming') -> None:
        super().__init__()
        if init not in RLRR_INITS:
            raise ValueError(f'RLRR init must be one of {RLRR_INITS}, got {init!r}')
        self.in_features, self.out_features, self.init = in_features, out_features, init
        self.scale_in = nn.Parameter(torch.empty(in_features))
        self.scale_out = nn.Parameter(torch.empty(out_features))
        self.bias_shift = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # kaiming_uniform_ with a=0: bound = sqrt(2) * sqrt(3 / fan_in) = sqrt(6 / fan_in).
        bound_in = math.sqrt(6.0 / self.in_features)
        nn.init.uniform_(self.scale_in, -bound_in, bound_in)
        if self.init == 'identity':
            nn.init.zeros_(self.scale_out)
        else:
            nn.init.uniform_(self.scale_out, -math.sqrt(6.0), math.sqrt(6.0))
        nn.init.zeros_(self.bias_shift)

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """W * (s_out s_in^T): (out, in) -> (out, in)."""
        return weight * torch.outer(self.scale_out, self.scale_in).to(weight.dtype)

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The update of the layer's output.

        Two equal forms: (W (x * s_in)) * s_out keeps activations of the input's and output's
        size for the backward pass, F.linear(x, W * s_out s_in^T) an (out, in) weight. The
        cheaper in memory is chosen: the weight for detection-sized inputs (tokens > in*out /
        (in + out)), the factorised form for small batches.

        Args:
            x: Input of the layer, (..., in).
            weight: The layer's frozen weight rows, (out, in).

        Returns:
            (..., out): y' - y.
        """
        tokens = x.numel() // max(x.shape[-1], 1)
        if tokens * (self.in_features + self.out_features) > weight.numel():
            update = F.linear(x, self.delta_weight(weight))
        else:
            update = F.linear(x * self.scale_in.to(x.dtype), weight) * self.scale_out
        return update + self.bias_shift

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'init={self.init!r}')
