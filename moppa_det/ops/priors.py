"""Heat, wave and Poisson priors as spectral filters in the DCT domain (Neumann boundary).

With lambda the spectrum of -Laplacian (see :func:`laplacian_eigenvalues`), per channel:

- heat, du/dt = k * Laplacian(u), after time t:   H_hat = X_hat * exp(-k t lambda)
- wave, d2u/dt2 = c^2 * Laplacian(u), X at rest:  W_hat = X_hat * cos(c t sqrt(lambda))
- Poisson, Laplacian(u) = f with source F:        screened P_hat = F_hat * mu / (lambda + mu),
  mu = (pi / max(H, W))^2, so the DC gain is 1; or the literal F_hat / lambda with DC passed.

The Poisson source is F = S * X (or X + S) with S a trainable map that is resized to the
runtime grid. k, c and t are positive through softplus, one value per channel; t is shared by
heat and wave.

In ``eval()`` under ``torch.no_grad()`` the gains and the resized source map of each grid size
are computed once and reused until a parameter changes (:mod:`.param_cache`).
:meth:`PhysicalPriors.spatial_responses` is the inference form: channels last, every prior back
in space, with few and dense operations.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dct import cached, dct2, dct2_channels_last, idct2_channels_last, laplacian_eigenvalues
from .param_cache import ParamCache

PRIOR_NAMES = ('heat', 'wave', 'poisson')
POISSON_MODES = ('screened', 'literal')
SOURCE_MODES = ('multiply', 'add')
RESIZE_MODES = ('bilinear', 'bicubic')


def inverse_softplus(value: float) -> float:
    """Returns r with softplus(r) == value (value > 0)."""
    return value + math.log(-math.expm1(-value))


def heat_gain(lam: torch.Tensor, kt: torch.Tensor) -> torch.Tensor:
    """exp(-k t lambda). lam: (H, W); kt: (C,). Returns (C, H, W)."""
    return torch.exp(-kt[:, None, None] * lam)


def wave_gain(lam: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """cos(c t sqrt(lambda)). lam: (H, W); ct: (C,). Returns (C, H, W)."""
    return torch.cos(ct[:, None, None] * lam.sqrt())


def poisson_gain(lam: torch.Tensor, mode: str = 'screened') -> torch.Tensor:
    """Screened mu / (lambda + mu) or literal 1 / lambda with the DC term passed. Returns (H, W)."""
    if mode == 'screened':
        mu = (math.pi / max(lam.shape)) ** 2
        return mu / (lam + mu)
    inverse = 1.0 / lam.clamp_min(torch.finfo(lam.dtype).tiny)
    inverse[0, 0] = 1.0
    return inverse


class PhysicalPriors(nn.Module):
    """The spectral filters of one MoPPA unit with their learnable parameters.

    Args:
        channels: Number of channels C the priors act on (the bottleneck width r, or D).
        priors: Names of the priors to compute, a non-empty subset of ``PRIOR_NAMES``, in the
            order their spectra are returned.
        init_kt: Initial k * t of the heat prior.
        init_ct: Initial c * t of the wave prior.
        init_t: Initial t (shared by heat and wave).
        poisson: ``'screened'`` or ``'literal'``.
        source: ``'multiply'`` (F = S * X, S init 1) or ``'add'`` (F = X + S, S init 0).
        source_size: (h, w) of the stored source map S.
        source_resize: Interpolation used to resize S to the runtime grid.
    """

    # Read by the optimizer constructor: decay would pull k, c, t towards an all-pass filter.
    no_weight_decay = True

    def __init__(self, channels: int, priors: tuple[str, ...] = PRIOR_NAMES, init_kt: float = 0.1,
                 init_ct: float = 0.5, init_t: float = 1.0, poisson: str = 'screened',
                 source: str = 'multiply', source_size: tuple[int, int] = (14, 14),
                 source_resize: str = 'bilinear') -> None:
        super().__init__()
        self.channels = channels
        self.priors = tuple(priors)
        self.init_kt, self.init_ct, self.init_t = init_kt, init_ct, init_t
        self.poisson_mode, self.source_mode, self.source_resize = poisson, source, source_resize
        uses_time = 'heat' in self.priors or 'wave' in self.priors
        self.raw_t = nn.Parameter(torch.empty(channels)) if uses_time else None
        self.raw_k = nn.Parameter(torch.empty(channels)) if 'heat' in self.priors else None
        self.raw_c = nn.Parameter(torch.empty(channels)) if 'wave' in self.priors else None
        self.source = (nn.Parameter(torch.empty(source_size))
                       if 'poisson' in self.priors else None)
        self.filter_cache = ParamCache()
        self.register_load_state_dict_post_hook(_clear_filter_cache)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """k t = init_kt, c t = init_ct, t = init_t, S = 1 (multiply) or 0 (add)."""
        with torch.no_grad():
            if self.raw_t is not None:
                self.raw_t.fill_(inverse_softplus(self.init_t))
            if self.raw_k is not None:
                self.raw_k.fill_(inverse_softplus(self.init_kt / self.init_t))
            if self.raw_c is not None:
                self.raw_c.fill_(inverse_softplus(self.init_ct / self.init_t))
            if self.source is not None:
                self.source.fill_(1.0 if self.source_mode == 'multiply' else 0.0)

    @property
    def num_priors(self) -> int:
        return len(self.priors)

    def diffusion_times(self) -> dict[str, torch.Tensor]:
        """Returns the positive per-channel k*t and c*t that are in use, each of shape (C,)."""
        times = {}
        t = F.softplus(self.raw_t) if self.raw_t is not None else None
        if self.raw_k is not None:
            times['kt'] = F.softplus(self.raw_k) * t
        if self.raw_c is not None:
            times['ct'] = F.softplus(self.raw_c) * t
        return times

    def source_map(self, h: int, w: int) -> torch.Tensor:
        """The source map S resized to the runtime grid. Returns (H, W) in float32."""
        source = self.source.float()
        if source.shape == (h, w):
            return source
        return F.interpolate(source[None, None], size=(h, w), mode=self.source_resize,
                             align_corners=False)[0, 0]

    def train(self, mode: bool = True) -> 'PhysicalPriors':
        self.filter_cache.clear()  # parameters are about to change (or just did)
        return super().train(mode)

    def filters(self, h: int, w: int, device: torch.device) -> dict[str, torch.Tensor]:
        """What the priors multiply the spectra by on an (H, W) grid, float32.

        Cached per (H, W, device) in inference (see :mod:`.param_cache`).

        Returns:
            'heat' and 'wave' gains of shape (C, H, W), the 'poisson' gain (H, W) and the
            resized 'source' map (H, W), for the priors in use.
        """
        params = [p for p in (self.raw_t, self.raw_k, self.raw_c, self.source) if p is not None]
        return self.filter_cache.get((h, w, device), params,
                                     lambda: self._compute_filters(h, w, device))

    def _compute_filters(self, h: int, w: int, device: torch.device) -> dict[str, torch.Tensor]:
        lam = cached(laplacian_eigenvalues, h, w, device)
        times = self.diffusion_times()
        filters = {}
        if 'heat' in self.priors:
            filters['heat'] = heat_gain(lam, times['kt'])
        if 'wave' in self.priors:
            filters['wave'] = wave_gain(lam, times['ct'])
        if 'poisson' in self.priors:
            filters['poisson'] = poisson_gain(lam, self.poisson_mode)
            filters['source'] = self.source_map(h, w)
        return filters

    def channels_last_filters(self, h: int, w: int, device: torch.device
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`filters` laid out for :meth:`spatial_responses`, cached alike.

        Returns:
            (gain, source): gain of shape (H, W, P * C), gain[n, m, i * C + c] the gain of prior
            i for channel c; source of shape (H, W, P, 1): S for the Poisson prior, the neutral
            value (1 to multiply, 0 to add) for the others.
        """
        params = [p for p in (self.raw_t, self.raw_k, self.raw_c, self.source) if p is not None]
        return self.filter_cache.get(('channels_last', h, w, device), params,
                                     lambda: self._channels_last_filters(h, w, device))

    def _channels_last_filters(self, h: int, w: int, device: torch.device
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        filters = self._compute_filters(h, w, device)
        gains = [filters[name].expand(self.channels, h, w) for name in self.priors]
        gain = torch.stack(gains).permute(2, 3, 0, 1).reshape(h, w, -1)
        neutral = torch.full((h, w), 1.0 if self.source_mode == 'multiply' else 0.0,
                             device=device)
        source = torch.stack([filters['source'] if name == 'poisson' else neutral
                              for name in self.priors], dim=-1)
        return gain, source[..., None]

    def spatial_responses(self, z: torch.Tensor) -> torch.Tensor:
        """Every prior's response back in space, channels last: IDCT2 of :meth:`forward`.

        The inference form: one transform pair over all priors at once (each with its own copy
        of ``z``, the Poisson one as its source F), dense channels-last matmuls, the gains
        multiplied in place. Equals ``idct2(self(z))`` to float32 rounding.

        Args:
            z: Float32 tensor of shape (B, H, W, C), any strides.

        Returns:
            Tensor of shape (B, H, W, P, C): out[..., i, :] is prior i's response.
        """
        b, h, w, c = z.shape
        if c != self.channels:
            raise ValueError(f'PhysicalPriors expects {self.channels} channels, got {c}')
        gain, source = self.channels_last_filters(h, w, z.device)
        z = z.unsqueeze(-2)
        inputs = z * source if self.source_mode == 'multiply' else z + source  # (B, H, W, P, C)
        spectra = dct2_channels_last(inputs.view(b, h, w, -1))
        spectra = spectra.mul_(gain) if not torch.is_grad_enabled() else spectra * gain
        return idct2_channels_last(spectra).view(b, h, w, self.num_priors, c)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Applies every prior to ``z`` and returns their spectra.

        The forward DCT of ``z`` is computed once and shared; the Poisson source needs a second
        one, batched into the same matmul.

        Args:
            z: Float32 tensor of shape (B, C, H, W).

        Returns:
            Spectra of shape (B, P, C, H, W), P = ``num_priors``, in ``self.priors`` order.
        """
        b, c, h, w = z.shape
        if c != self.channels:
            raise ValueError(f'PhysicalPriors expects {self.channels} channels, got {c}')
        filters = self.filters(h, w, z.device)
        if 'poisson' in self.priors:
            source = filters['source']
            forcing = z * source if self.source_mode == 'multiply' else z + source
            z_hat, forcing_hat = dct2(torch.stack([z, forcing])).unbind(0)
        else:
            z_hat = dct2(z)
        spectra = [(forcing_hat if name == 'poisson' else z_hat) * filters[name]
                   for name in self.priors]
        return torch.stack(spectra, dim=1)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, priors={self.priors}, poisson={self.poisson_mode}, '
                f'source={self.source_mode}')


def _clear_filter_cache(module: PhysicalPriors, incompatible_keys: object) -> None:
    """Load post-hook (a function, not a bound method, so that deep copies clear their own)."""
    module.filter_cache.clear()
