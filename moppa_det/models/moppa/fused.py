"""The inference form of a MoPPA unit: the same function in fewer, denser operations.

On a map a (B, H, W, D), with r the bottleneck width and P priors:

    [z | l] = a [W_down | W_r]^T + [b_down | b_r]       one matmul for down-projection and router
    alpha = softmax(l)                                    (per sample: softmax(mean of l))
    R_i = IDCT2(G_i * DCT2(F_i(z)))                       all priors in one transform pair
    out = a + [alpha_1 R_1, ..., alpha_P R_P, 1] W_out    one matmul, residual and bias included

with W_out = s * [W_up^T; ...; W_up^T; b_up] ((P r + 1) x D): mixing the priors and the
up-projection are one matmul, and the residual add is its accumulation. A constant router
(uniform, or one prior) is folded into W_out. The mean over tokens of the logits equals the
logits of the mean token (the router is linear), so per-sample routing needs no second pass over a.

Every operation is one dense kernel over the whole map, about half as many as the training
form runs; on a CPU they run on at most :func:`~moppa_det.ops.threads.inference_threads`
intra-op threads (default 1, see :mod:`moppa_det.ops.threads`). The fused weights are cached
(``ParamCache``, per device and dtype) and recomputed when a parameter changes. No routing
statistics are recorded: they serve the route loss and its logs. Equals the training form to
float32 rounding.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from ...ops.threads import limited_threads

if TYPE_CHECKING:  # only for annotations: unit.py imports this module
    from .unit import MoPPAUnit


class FusedWeights(NamedTuple):
    """The cached weights of the inference form.

    Attributes:
        w_in: (r + L, D): the down-projection's rows, then the router's L = P logit rows (L = 0
            for a constant router).
        b_in: (r + L,) their biases.
        w_out: (P * r + 1, D): s * W_up^T once per prior (times 1/P for a uniform router), then
            s * b_up.
    """
    w_in: torch.Tensor
    b_in: torch.Tensor
    w_out: torch.Tensor


def fused_weights(unit: 'MoPPAUnit', dtype: torch.dtype) -> FusedWeights:
    """The unit's :class:`FusedWeights` in ``dtype``, computed from its parameters (uncached)."""
    proj = unit.router.proj
    w_in, b_in = unit.down.weight, unit.down.bias
    if proj is not None:
        w_in, b_in = torch.cat([w_in, proj.weight]), torch.cat([b_in, proj.bias])
    num_priors = unit.priors.num_priors
    prior_weight = 1.0 if proj is not None else 1.0 / num_priors  # constant alpha, folded
    up = unit.up.weight.T * (unit.config.scale * prior_weight)  # (r, D)
    bias = (unit.up.bias * unit.config.scale)[None]
    w_out = torch.cat([up] * num_priors + [bias])
    return FusedWeights(*(weight.detach().to(dtype) for weight in (w_in, b_in, w_out)))


def fused_delta_inputs(unit: 'MoPPAUnit', rows: torch.Tensor, grid: tuple[int, int],
                       weights: FusedWeights) -> torch.Tensor:
    """The rows that W_out multiplies: [alpha_1 R_1, ..., alpha_P R_P, 1].

    Args:
        unit: The unit.
        rows: The map as rows, shape (B, H * W, D).
        grid: (H, W).
        weights: The unit's fused weights.

    Returns:
        Tensor of shape (B, H * W, P * r + 1) in the dtype of ``rows``.
    """
    b, hw, d = rows.shape
    width = unit.down.out_features
    projected = torch.baddbmm(weights.b_in, rows, weights.w_in.T.expand(b, d, -1))
    z = unit.act(projected[..., :width])
    responses = unit.priors.spatial_responses(z.float().view(b, *grid, width))
    mixed = responses.view(b, hw, -1, width)                        # (B, HW, P, r)
    if unit.router.proj is not None:
        logits = projected[..., width:].float()
        if unit.router.mode == 'sample':
            logits = logits.mean(dim=1, keepdim=True)
        mixed = mixed * logits.softmax(dim=-1)[..., None]
    ones = mixed.new_ones(b, hw, 1)  # the bias row of W_out; F.pad would fill (B, HW, P r + 1)
    return torch.cat([mixed.view(b, hw, -1), ones], dim=-1).to(rows.dtype)


def fused_forward(unit: 'MoPPAUnit', a: torch.Tensor, out: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """a + s * Delta(a) in the inference form (see the module docstring).

    Args:
        unit: A unit with a bottleneck.
        a: Map of shape (B, H, W, D); its (H, W, D) blocks may be views into token tensors.
        out: Optional (B, H, W, D) tensor to write the result into (no autograd), e.g. the
            patch map inside the token tensor the host returns.

    Returns:
        Tensor of shape (B, H, W, D): ``out`` when given.
    """
    b, h, w, d = a.shape
    weights = unit.fused_weights(a.device, a.dtype)
    rows = a.reshape(b, h * w, d)  # a view for ViT patches and Swin maps
    with limited_threads(a.device):  # see ops.threads: small operations, shared CPUs
        inputs = fused_delta_inputs(unit, rows, (h, w), weights)
        w_out = weights.w_out.expand(b, -1, -1)
        if out is None:
            return torch.baddbmm(rows, inputs, w_out).view(b, h, w, d)
        torch.baddbmm(rows, inputs, w_out, out=out.view(b, h * w, d))
        return out


__all__ = ['FusedWeights', 'fused_weights', 'fused_delta_inputs', 'fused_forward']
