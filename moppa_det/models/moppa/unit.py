"""One MoPPA unit: down-projection, heat/wave/Poisson priors in the DCT domain, router,
up-projection.

For input a (tokens after norm1, or a (B, H, W, D) map):
    z = act(a W_down + b)                    (B, H, W, r)
    P_i = IDCT(G_i * DCT(z_i))               the three priors, one shared forward DCT
    m = sum_i alpha_i * P_i                  alpha from the router
    out = a + s * (m W_up + b_up)            W_up, b_up zero-init: out == a at step 0
The spectral path runs in float32 even under autocast; the output has the input's dtype.
In ``eval()`` without autograd through its parameters the unit runs the same function in its
inference form (:mod:`.fused`), which records no routing statistics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ops import PhysicalPriors, idct2
from ...ops.param_cache import ParamCache, caching_allowed
from .config import MoPPAConfig
from .fused import FusedWeights, fused_forward, fused_weights
from .router import Router


class MoPPAUnit(nn.Module):
    """A Mixture of Physical Priors Adapter unit.

    Args:
        dim: Token width D.
        config: The unit's options; defaults to ``MoPPAConfig()``.

    Attributes:
        last_mean_alpha: Mean alpha over batch and tokens of the last forward, shape (P,), with
            its graph (the route regularization differentiates it); ``None`` before a forward.
        last_token_entropy: Mean per-token entropy of alpha in the last forward (detached).
            Neither is recorded by the inference form (see :meth:`uses_fused_path`).
    """

    def __init__(self, dim: int, config: MoPPAConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MoPPAConfig()
        self.dim = dim
        width = config.bottleneck or dim
        self.down = nn.Linear(dim, width) if config.bottleneck else None
        self.act = nn.GELU() if config.activation == 'gelu' else nn.Identity()
        self.priors = PhysicalPriors(
            width, config.priors, init_kt=config.init_kt, init_ct=config.init_ct,
            init_t=config.init_t, poisson=config.poisson, source=config.source,
            source_size=config.source_size, source_resize=config.source_resize)
        self.router = Router(dim, len(config.priors), config.router)
        self.up = nn.Linear(width, dim) if config.bottleneck else None
        # Per-channel variant: a zero-init output scale keeps the unit an identity at step 0.
        self.channel_scale = None if config.bottleneck else nn.Parameter(torch.zeros(dim))
        self.last_mean_alpha: torch.Tensor | None = None
        self.last_token_entropy: torch.Tensor | None = None
        # The inference form's weights per (device, dtype); see .fused.
        self.fused_cache = ParamCache(max_entries=4)
        self.register_load_state_dict_post_hook(_clear_fused_cache)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default init of the down-projection; zeros on every path into the output."""
        if self.down is not None:
            self.down.reset_parameters()
        if self.up is not None:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        if self.channel_scale is not None:
            nn.init.zeros_(self.channel_scale)
        self.priors.reset_parameters()
        self.router.reset_parameters()

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None,
                num_prefix_tokens: int = 0) -> torch.Tensor:
        """Adapts tokens or a feature map.

        Args:
            x: Tokens of shape (B, N, D) with N = num_prefix_tokens + H * W, or a map of shape
                (B, H, W, D).
            grid: (H, W) of the token grid; required for tokens, ignored for maps.
            num_prefix_tokens: Leading class/register tokens, passed through unchanged.

        Returns:
            Tensor of the shape and dtype of ``x``: x + s * Delta(x).
        """
        if x.dim() == 4:
            if self.uses_fused_path(x):
                return fused_forward(self, x)
            return torch.add(x, self.delta(x), alpha=self.config.scale)
        if x.dim() != 3 or grid is None:
            raise ValueError('MoPPAUnit expects (B, H, W, D) maps, or (B, N, D) tokens with '
                             f'their grid; got shape {tuple(x.shape)} and grid={grid}')
        b, n, d = x.shape
        h, w = grid
        if n != num_prefix_tokens + h * w:
            raise ValueError(f'MoPPAUnit: {n} tokens do not match {num_prefix_tokens} prefix '
                             f'tokens + a {h}x{w} grid')
        patches = x[:, num_prefix_tokens:] if num_prefix_tokens else x
        if self.uses_fused_path(x):
            adapted = fused_forward(self, patches.reshape(b, h, w, d)).reshape(b, h * w, d)
            return torch.cat([x[:, :num_prefix_tokens], adapted], dim=1)
        delta = self.delta(patches.reshape(b, h, w, d)).reshape(b, h * w, d)
        if num_prefix_tokens:  # zero update for the prefix tokens, without slicing x apart
            delta = F.pad(delta, (0, 0, num_prefix_tokens, 0))
        return torch.add(x, delta, alpha=self.config.scale)

    def uses_fused_path(self, x: torch.Tensor) -> bool:
        """Whether a forward on ``x`` runs the inference form (:mod:`.fused`).

        It does in ``eval()`` for a unit with a bottleneck, with inference caches on (see
        :func:`~moppa_det.models.adapters.inference.set_inference_caches`), where caching is
        allowed (no autograd through the parameters, not under ``torch.compile``) and autocast
        is off; otherwise the training form runs (and records the routing statistics).
        """
        return (not self.training and self.down is not None and self.fused_cache.enabled
                and caching_allowed(self._fused_params())
                and not torch.is_autocast_enabled(x.device.type))

    def fused_weights(self, device: torch.device, dtype: torch.dtype) -> FusedWeights:
        """The inference form's weights, cached per (device, dtype) while the parameters are
        unchanged (see :class:`~moppa_det.ops.param_cache.ParamCache`)."""
        return self.fused_cache.get((device, dtype), self._fused_params(),
                                    lambda: fused_weights(self, dtype))

    def _fused_params(self) -> list[torch.Tensor]:
        layers = [self.down, self.up, self.router.proj]
        return [p for layer in layers if layer is not None for p in (layer.weight, layer.bias)]

    def train(self, mode: bool = True) -> 'MoPPAUnit':
        self.fused_cache.clear()  # parameters are about to change (or just did)
        return super().train(mode)

    def delta(self, a: torch.Tensor) -> torch.Tensor:
        """The unit's update Delta(a) of a map.

        Args:
            a: Tensor of shape (B, H, W, D).

        Returns:
            Tensor of shape (B, H, W, D) in the dtype of ``a``.
        """
        b, h, w, d = a.shape
        alpha = self.router(a.reshape(b, h * w, d))  # (B, HW or 1, P), float32
        self._record_routing(alpha)
        z = self.act(self.down(a)) if self.down is not None else a
        with torch.autocast(device_type=a.device.type, enabled=False):
            mixed = self._mix_priors(z.float().permute(0, 3, 1, 2), alpha)
        mixed = mixed.permute(0, 2, 3, 1).to(z.dtype)  # (B, H, W, r)
        if self.up is not None:
            return self.up(mixed)
        return mixed * self.channel_scale.to(mixed.dtype)

    def _mix_priors(self, z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """sum_i alpha_i * IDCT(spectrum_i).

        Args:
            z: Float32 tensor of shape (B, C, H, W).
            alpha: Float32 tensor of shape (B, H*W, P) or (B, 1, P).

        Returns:
            Float32 tensor of shape (B, C, H, W).
        """
        b, c, h, w = z.shape
        spectra = self.priors(z)  # (B, P, C, H, W)
        num_priors = spectra.shape[1]
        if alpha.shape[1] == 1:
            # One alpha per sample: the mix is linear, so mix in the spectrum and invert once.
            return idct2((spectra * alpha.reshape(b, num_priors, 1, 1, 1)).sum(1))
        alpha_map = alpha.transpose(1, 2).reshape(b, num_priors, 1, h, w)
        return (idct2(spectra) * alpha_map).sum(1)

    def _record_routing(self, alpha: torch.Tensor) -> None:
        self.last_mean_alpha = alpha.mean(dim=(0, 1))
        with torch.no_grad():
            entropy = -(alpha * alpha.clamp_min(1e-12).log()).sum(-1)
            self.last_token_entropy = entropy.mean()

    def extra_repr(self) -> str:
        return f'dim={self.dim}, router={self.config.router}, scale={self.config.scale}'


def _clear_fused_cache(module: MoPPAUnit, incompatible_keys: object) -> None:
    """Load post-hook (a function, not a bound method, so that deep copies clear their own)."""
    module.fused_cache.clear()
