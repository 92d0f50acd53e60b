"""The spectral filter of the authors' MoPPA formulation (METHOD.md, "The authors' formulation").

One block's filter acts on all C = heads * head_dim channels of a (B, H, W, C) map:
X_hat = DCT2(x) per channel, x' = IDCT2(X_hat * R), with the per-frequency, per-channel response

    R(n, m, c) = sum_i w_i[h] * gain_i(n, m, c),   a_i(n, m, c) = ReLU(K_i[n, m, h] * T_i[j])

for channel c = h * head_dim + j (head h, in-head index j), lambda = (pi n / H)^2 + (pi m / W)^2
and the gains heat exp(-lambda a), wave cos(lambda a) (lambda, not sqrt(lambda)) and Poisson a
itself. K_i are coefficient maps stored at a fixed size (14 x 14 for a 224-px ViT-B/16) and
resampled over normalised frequency to the runtime grid; w = softmax(P / tau) over the priors.

Pure torch (no MMEngine/MMDetection/timm imports). Callers run it in float32.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from .dct import cached, dct2_channels_last, idct2_channels_last
from .priors import PRIOR_NAMES, RESIZE_MODES

# The authors' guard inside the log of the routing entropy.
ENTROPY_EPS = 1e-8
# Keys' cubic convolution constant, the one torch's bicubic interpolation uses.
_CUBIC_A = -0.75


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Cubic convolution weights of the taps at offsets -1, 0, 1, 2 for fractions t: (N, 4)."""
    a = _CUBIC_A
    distances = torch.stack([t + 1, t, 1 - t, 2 - t], dim=-1).abs()
    near = ((a + 2) * distances - (a + 3)) * distances ** 2 + 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a
    return torch.where(distances <= 1, near, far)


@lru_cache(maxsize=128)
def frequency_resize_matrix(n_out: int, n_in: int, mode: str, device: torch.device
                            ) -> torch.Tensor:
    """Interpolation matrix that resamples a stored frequency axis to another length.

    Index n of a length-N axis holds normalised frequency n / N (lambda's omega = pi n / N), so
    output index n' samples the stored axis at s = n' * n_in / n_out: DC maps to DC, and where
    n_out is a multiple of n_in every (n_out / n_in)-th output is a stored value exactly.
    Frequencies past the last stored one take its value (border replication).

    Args:
        n_out: Runtime length.
        n_in: Stored length.
        mode: 'bilinear' (linear along each axis) or 'bicubic' (Keys, a = -0.75, as torch).
        device: Device of the result.

    Returns:
        Float32 tensor A of shape (n_out, n_in); resampled = A @ stored. The identity when
        n_out == n_in.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f'resize mode {mode!r} is not one of {RESIZE_MODES}')
    with torch.inference_mode(False):  # a cached inference tensor would break autograd later
        position = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        base = position.floor()
        t = position - base
        if mode == 'bilinear':
            offsets, weights = (0, 1), torch.stack([1 - t, t], dim=-1)
        else:
            offsets, weights = (-1, 0, 1, 2), _cubic_weights(t)
        taps = (base.long()[:, None] + torch.tensor(offsets)).clamp(0, n_in - 1)
        matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
        matrix.scatter_add_(1, taps, weights)
        return matrix.to(device=device, dtype=torch.float32)


def resize_coefficients(maps: torch.Tensor, size: tuple[int, int], mode: str = 'bilinear'
                        ) -> torch.Tensor:
    """Coefficient maps resampled over normalised frequency to the runtime grid.

    Args:
        maps: Stored maps of shape (P, S_h, S_w, K).
        size: Runtime grid (H, W).
        mode: 'bilinear' or 'bicubic'.

    Returns:
        Tensor of shape (P, H, W, K); ``maps`` itself when (H, W) == (S_h, S_w).
    """
    h, w = size
    if (h, w) == tuple(maps.shape[1:3]):
        return maps
    resize_h = cached(frequency_resize_matrix, h, maps.shape[1], mode, maps.device)
    resize_w = cached(frequency_resize_matrix, w, maps.shape[2], mode, maps.device)
    resize_h, resize_w = resize_h.to(maps.dtype), resize_w.to(maps.dtype)
    return torch.einsum('hs,pstk,wt->phwk', resize_h, maps, resize_w)


def prior_rates(maps: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """a_i(n, m, c) = ReLU(K_i[n, m, h] * T_i[j]) with c = h * head_dim + j.

    Args:
        maps: Coefficient maps at the runtime grid, shape (P, H, W, heads).
        times: Per-prior times of one block, shape (P, head_dim).

    Returns:
        Tensor of shape (P, H, W, heads * head_dim).
    """
    p, h, w, heads = maps.shape
    rates = torch.relu(maps[..., :, None] * times[:, None, None, None, :])
    return rates.reshape(p, h, w, heads * times.shape[-1])


def prior_gains(lam: torch.Tensor, rates: torch.Tensor, priors: Sequence[str]) -> torch.Tensor:
    """Per-frequency gains: heat exp(-lambda a), wave cos(lambda a), Poisson a.

    Args:
        lam: Laplacian eigenvalues lambda of shape (H, W).
        rates: a_i of shape (P, H, W, C), in the order of ``priors``.
        priors: Names of the P priors, each in ``PRIOR_NAMES``.

    Returns:
        Tensor of shape (P, H, W, C).
    """
    gains = []
    for name, rate in zip(priors, rates):
        if name == 'heat':
            gains.append(torch.exp(-lam[..., None] * rate))
        elif name == 'wave':
            gains.append(torch.cos(lam[..., None] * rate))
        elif name == 'poisson':
            gains.append(rate)
        else:
            raise ValueError(f'unknown prior {name!r}; expected one of {PRIOR_NAMES}')
    return torch.stack(gains)


def router_weights(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Static routing w = softmax(P / tau) over the priors, per head.

    Args:
        logits: P of shape (num_priors, heads).
        temperature: tau of shape (heads,).

    Returns:
        Tensor of shape (num_priors, heads) whose columns sum to 1.
    """
    return torch.softmax(logits / temperature, dim=0)


def routing_entropy(weights: torch.Tensor) -> torch.Tensor:
    """E = -mean(w log w) over all (prior, head) entries of one block. Returns a scalar."""
    return -(weights * torch.log(weights + ENTROPY_EPS)).mean()


def entropy_decay(progress: float) -> float:
    """d = (max(1 - progress, 0.5) - 0.5) / 0.5: 1 at the start, 0 from half of training on."""
    return (max(1.0 - progress, 0.5) - 0.5) / 0.5


def mixed_response(lam: torch.Tensor, maps: torch.Tensor, times: torch.Tensor,
                   weights: torch.Tensor, priors: Sequence[str]) -> torch.Tensor:
    """R = sum_i w_i gain_i for every frequency and channel.

    Args:
        lam: Laplacian eigenvalues of shape (H, W).
        maps: Coefficient maps at the runtime grid, shape (P, H, W, heads).
        times: Times of one block, shape (P, head_dim).
        weights: Routing weights of one block, shape (P, heads).
        priors: Names of the P priors.

    Returns:
        Tensor of shape (H, W, C), C = heads * head_dim.
    """
    gains = prior_gains(lam, prior_rates(maps, times), priors)
    per_channel = weights.repeat_interleave(times.shape[-1], dim=1)  # (P, C), c = h*hd + j
    return (gains * per_channel[:, None, None, :]).sum(0)


def spectral_filter(x: torch.Tensor, response: torch.Tensor, out: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """x' = IDCT2(DCT2(x) * R) per channel, in the dtype of ``x``.

    Args:
        x: Maps of shape (B, H, W, C).
        response: R of shape (H, W, C).
        out: Optional (B, H, W, C) tensor of the dtype of ``x`` to write x' into (no autograd).

    Returns:
        Tensor of shape (B, H, W, C): ``out`` when given.
    """
    # Channels last throughout: no permuted copies (see dct2_channels_last).
    spectrum = dct2_channels_last(x)
    # Without autograd, in place: the same values, one (B, H, W, C) allocation fewer.
    spectrum = spectrum * response if torch.is_grad_enabled() else spectrum.mul_(response)
    return idct2_channels_last(spectrum, out)


def clear_resize_cache() -> None:
    """Empties the cache of resize matrices."""
    frequency_resize_matrix.cache_clear()


__all__ = ['frequency_resize_matrix', 'resize_coefficients', 'prior_rates', 'prior_gains',
           'router_weights', 'routing_entropy', 'entropy_decay', 'mixed_response',
           'spectral_filter', 'clear_resize_cache', 'ENTROPY_EPS']
