"""Orthonormal 2-D DCT-II and its inverse on the last two axes, with cached bases.

C_N[n, x] = s_n * cos(pi * n * (x + 1/2) / N), s_0 = sqrt(1/N), s_n = sqrt(2/N) is orthogonal,
so the inverse transform is its transpose. A 2-D transform is two matmuls: X_hat = C_H X C_W^T.

Detection batches change size every step, so the bases are cached per (N, device, dtype) in a
bounded LRU cache instead of being stored as module buffers (which would also end up in
checkpoints). ``torch.compile`` ignores ``lru_cache`` (it traces the wrapped function), so under
compilation the bases are built inside the graph, explicitly (:func:`cached`).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import torch

# Enough for every distinct side length of a multi-scale detection run with room to spare;
# one 200x200 fp32 basis is 160 kB.
_CACHE_SIZE = 128


@lru_cache(maxsize=_CACHE_SIZE)
def dct_matrix(n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Returns the orthonormal DCT-II matrix C_N.

    Built in float64 and cast, so that the orthogonality error stays at the target dtype's
    rounding level.

    Args:
        n: Transform length N >= 1.
        device: Device of the result.
        dtype: Dtype of the result.

    Returns:
        Tensor of shape (N, N); row n holds the n-th cosine basis vector.
    """
    if n < 1:
        raise ValueError(f'DCT length must be >= 1, got {n}')
    # A cached tensor first built under inference_mode would be an inference tensor, which
    # autograd refuses to save in any later training forward.
    with torch.inference_mode(False):
        freq = torch.arange(n, dtype=torch.float64)[:, None]
        pos = torch.arange(n, dtype=torch.float64)[None, :] + 0.5
        basis = torch.cos(math.pi * freq * pos / n) * math.sqrt(2.0 / n)
        basis[0] /= math.sqrt(2.0)
        return basis.to(device=device, dtype=dtype)


@lru_cache(maxsize=_CACHE_SIZE)
def laplacian_eigenvalues(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Returns lambda = omega_n^2 + omega_m^2, the spectrum of -Laplacian (Neumann boundary).

    Args:
        h: Grid height H.
        w: Grid width W.
        device: Device of the result.

    Returns:
        Float32 tensor of shape (H, W) with lambda[0, 0] = 0.
    """
    with torch.inference_mode(False):  # see dct_matrix
        omega_h = math.pi * torch.arange(h, dtype=torch.float64) / h
        omega_w = math.pi * torch.arange(w, dtype=torch.float64) / w
        lam = omega_h[:, None] ** 2 + omega_w[None, :] ** 2
        return lam.to(device=device, dtype=torch.float32)


def cached(function: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``function(*args)`` of an ``lru_cache`` function; its uncached body under torch.compile
    (which would trace through the cache anyway, with a warning)."""
    if torch.compiler.is_compiling():
        return function.__wrapped__(*args)
    return function(*args)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes.

    Args:
        x: Tensor of shape (..., H, W).

    Returns:
        Spectrum of shape (..., H, W) in the dtype of ``x``.
    """
    h, w = x.shape[-2:]
    c_h = cached(dct_matrix, h, x.device, x.dtype)
    c_w = cached(dct_matrix, w, x.device, x.dtype)
    return c_h @ _dense(x) @ c_w.T


def idct2(x_hat: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` over the last two axes.

    Args:
        x_hat: Spectrum of shape (..., H, W).

    Returns:
        Tensor of shape (..., H, W) in the dtype of ``x_hat``.
    """
    h, w = x_hat.shape[-2:]
    c_h = cached(dct_matrix, h, x_hat.device, x_hat.dtype)
    c_w = cached(dct_matrix, w, x_hat.device, x_hat.dtype)
    return c_h.T @ _dense(x_hat) @ c_w


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x, made contiguous if it is not: a broadcast matmul with a permuted operand (a
    channels-last map seen as (B, C, H, W)) takes a slow path on CPU, 10-200x slower than the
    copy plus a dense matmul (torch 2.14, a (1, 768, 64, 64) map)."""
    return x if x.is_contiguous() else x.contiguous()


def dct2_channels_last(x: torch.Tensor) -> torch.Tensor:
    """:func:`dct2` of each channel of a (B, H, W, C) map, without permuting it.

    Two dense matmuls over the contiguous (W * C) and C axes.

    Args:
        x: Tensor of shape (B, H, W, C).

    Returns:
        Spectrum of shape (B, H, W, C): out[b, :, :, c] = dct2(x[b, :, :, c]).
    """
    return _separable(x, *(cached(dct_matrix, n, x.device, x.dtype) for n in x.shape[1:3]))


def idct2_channels_last(x_hat: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`dct2_channels_last`: (B, H, W, C) -> (B, H, W, C).

    Args:
        x_hat: Spectrum of shape (B, H, W, C).
        out: Optional (B, H, W, C) tensor to write the result into (no autograd), e.g. the
            patch map inside a token tensor: saves copying the result there.
    """
    c_h, c_w = (cached(dct_matrix, n, x_hat.device, x_hat.dtype) for n in x_hat.shape[1:3])
    return _separable(x_hat, c_h.T, c_w.T, out)


def _separable(x: torch.Tensor, along_h: torch.Tensor, along_w: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """along_h applied over H and along_w over W of a (B, H, W, C) map (into ``out`` if given)."""
    b, h, w, c = x.shape
    y = torch.matmul(along_h, x.reshape(b, h, w * c))           # (B, H, W*C)
    if out is None:
        y = torch.matmul(along_w, y.reshape(b * h, w, c))       # (B*H, W, C)
        return y.reshape(b, h, w, c)
    # Per image: out[i] is one dense (H, W, C) block even where out as a whole is not (the
    # patches of a token tensor with prefix tokens), so the matmul writes it without a copy.
    for image, target in zip(y.view(b, h, w, c), out):
        torch.matmul(along_w, image, out=target)
    return out


def clear_cache() -> None:
    """Empties the basis and eigenvalue caches (e.g. after moving work to another device)."""
    dct_matrix.cache_clear()
    laplacian_eigenvalues.cache_clear()
