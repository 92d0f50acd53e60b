"""MoPPA as the authors' code does it (METHOD.md, "The authors' formulation").

A full-width spectral filter on the residual stream that feeds attention only: each block
becomes x = x + Attn(norm1(U(x))); x = x + MLP(norm2(x)), U(x) = IDCT2(DCT2(x) * R) per channel
on each image's valid grid (see :mod:`moppa_det.ops.paper_filter` for R). No bottleneck, no
projection, no zero-init: at step 0 the network is **not** the pre-trained one. The DC gain is
R(0, 0, c) = w_heat + w_wave + w_poisson * ReLU(T_poisson[j]) (heat and wave pass DC), about
2/3 + 0.5/3 = 0.83 with the default initialisation; towards high frequencies heat and wave
both roll off (lambda < 2 pi^2 and a_wave ~ 0.05, so the wave gain falls only to about
cos(1) ~ 0.55 and does not ring yet) while the Poisson gain is flat: a fixed low-pass mix.
Class/register tokens pass unchanged.

Parameters: coefficient maps K (P, S_h, S_w, heads), one tensor per stage shared by all its
blocks (a plain ViT has one stage; Swin's stages differ in heads); per block times
T (P, head_dim), router logits P (P, heads) and temperatures tau (heads,).

R depends on the parameters and the grid size only: in ``eval()`` under ``torch.no_grad()``
each block's R (resized maps, gains, static router) is computed once per grid size and device
and reused until a parameter changes (:class:`~moppa_det.ops.param_cache.ParamCache`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...ops import PRIOR_NAMES, RESIZE_MODES, apply_within, laplacian_eigenvalues
from ...ops.dct import cached
from ...ops.paper_filter import (
    entropy_decay,
    mixed_response,
    resize_coefficients,
    router_weights,
    routing_entropy,
    spectral_filter,
)
from ...ops.param_cache import ParamCache
from ...ops.threads import limited_threads
from .base import Adapter, AdapterHost, BlockSite, GridSizes
from .hooks import hook_norm1
from .registry import ADAPTERS

# Grid sizes whose response R each block keeps cached in inference.
RESPONSES_PER_BLOCK = 4
# The authors' initialisation of the times, per prior (their code, HCO.__init__).
_TIME_MEAN = dict(heat=0.05, wave=0.05, poisson=0.5)
_TIME_STD = dict(heat=0.01, wave=0.01, poisson=0.1)


@dataclass(frozen=True)
class MoPPAPaperOptions:
    """Options of :class:`MoPPAPaper`.

    Attributes:
        priors: Subset of ('heat', 'wave', 'poisson'), in mixing order; the router and its
            entropy span only these (the authors' branch masking).
        map_size: Stored (h, w) of the coefficient maps (an int: square); the authors use
            14 (the 14 x 14 grid of a 224-px ViT-B/16). Resampled to every runtime grid.
        map_resize: 'bilinear' or 'bicubic' resampling of the maps over normalised frequency.
        entropy_weight: s in lambda_e = s * d. Default 1e-3: the median of the authors'
            per-task values over VTAB's Natural group (caltech101 and cifar use 1e-3; their
            19 tasks range from 0 to 0.05, 7 of them 0), the group closest to COCO images.
        time_mean: Initial mean of T per prior (dict by name); unset priors keep the
            authors' heat 0.05, wave 0.05, poisson 0.5.
        time_std: Initial std of T per prior (dict by name); authors' 0.01, 0.01, 0.1.
        temperature: Initial router temperature tau (authors: 5).
    """
    priors: tuple[str, ...] = PRIOR_NAMES
    map_size: tuple[int, int] | int = (14, 14)
    map_resize: str = 'bilinear'
    entropy_weight: float = 1e-3
    time_mean: dict[str, float] | None = None
    time_std: dict[str, float] | None = None
    temperature: float = 5.0

    def __post_init__(self) -> None:
        size = self.map_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        object.__setattr__(self, 'map_size', size)
        object.__setattr__(self, 'priors', tuple(self.priors))
        if not self.priors or len(set(self.priors)) != len(self.priors) or any(
                prior not in PRIOR_NAMES for prior in self.priors):
            raise ValueError(f'priors={self.priors!r} must be distinct names from {PRIOR_NAMES}')
        if len(size) != 2 or not all(isinstance(n, int) and n >= 1 for n in size):
            raise ValueError(f'map_size={self.map_size!r} must be an int or (h, w), each >= 1')
        if self.map_resize not in RESIZE_MODES:
            raise ValueError(f'map_resize={self.map_resize!r} is not one of {RESIZE_MODES}')
        if not (math.isfinite(self.entropy_weight) and self.entropy_weight >= 0):
            raise ValueError(f'entropy_weight={self.entropy_weight!r} must be >= 0')
        for name, defaults in (('time_mean', _TIME_MEAN), ('time_std', _TIME_STD)):
            given = dict(getattr(self, name) or {})
            unknown = set(given) - set(PRIOR_NAMES)
            if unknown:
                raise ValueError(f'{name} has unknown priors {sorted(unknown)}; use {PRIOR_NAMES}')
            if name == 'time_std' and any(value < 0 for value in given.values()):
                raise ValueError(f'time_std={given!r} must be >= 0')
            object.__setattr__(self, name, {**defaults, **given})
        if not self.temperature > 0:
            raise ValueError(f'temperature={self.temperature!r} must be > 0')


class PaperStageMaps(nn.Module):
    """The coefficient maps K of one stage, shared by all its blocks.

    Args:
        num_priors: P.
        size: Stored (h, w).
        heads: Attention heads of the stage.
    """

    # Read by the optimizer constructor. The authors decay them with their VTAB weight decay
    # (5e-5 typically); the detection recipe's 0.05 would pull K (and so every a_i) to 0.
    no_weight_decay = True

    def __init__(self, num_priors: int, size: tuple[int, int], heads: int) -> None:
        super().__init__()
        self.coefficients = nn.Parameter(torch.empty(num_priors, *size, heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """K = 1."""
        nn.init.ones_(self.coefficients)


class PaperBlockParams(nn.Module):
    """The times T and the static router (P, tau) of one block.

    Args:
        options: The adapter's options (priors and initialisation).
        head_dim: Channels per head, D / heads.
        heads: Attention heads of the block.
    """

    no_weight_decay = True  # see PaperStageMaps; decay would also pull tau towards 0

    def __init__(self, options: MoPPAPaperOptions, head_dim: int, heads: int) -> None:
        super().__init__()
        self.options = options
        num_priors = len(options.priors)
        self.times = nn.Parameter(torch.empty(num_priors, head_dim))
        self.logits = nn.Parameter(torch.empty(num_priors, heads))
        self.temperature = nn.Parameter(torch.empty(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """T_i ~ N(mean_i, std_i), P ~ N(0, 1), tau = temperature."""
        with torch.no_grad():
            for row, prior in zip(self.times, self.options.priors):
                nn.init.normal_(row, self.options.time_mean[prior], self.options.time_std[prior])
            nn.init.normal_(self.logits)
            self.temperature.fill_(self.options.temperature)

    def routing(self) -> torch.Tensor:
        """w = softmax(P / tau) over the priors, shape (P, heads)."""
        return router_weights(self.logits, self.temperature)


@ADAPTERS.register_module()
class MoPPAPaper(Adapter):
    """The authors' MoPPA: U(x) before each block's norm1, attention only, full width.

    Records the blocks that ran; :meth:`auxiliary_losses` returns the entropy reward
    ``loss_prior_entropy`` = -s * d * sum over blocks of E, and for logging
    ``paper_w_b{block}_{prior}`` (routing weight, mean over heads) and ``paper_entropy``.
    """

    name = 'moppa_paper'
    Options = MoPPAPaperOptions
    training_options = ('entropy_weight',)

    def build(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        options: MoPPAPaperOptions = self.options
        heads_of_stage: dict[int, int] = {}
        for site in sites:
            if site.width % site.num_heads:
                raise ValueError(f'MoPPAPaper: block {site.index} width {site.width} is not a '
                                 f'multiple of its {site.num_heads} heads')
            if heads_of_stage.setdefault(site.stage, site.num_heads) != site.num_heads:
                raise ValueError(f'MoPPAPaper: stage {site.stage} mixes head counts; its '
                                 'coefficient maps are shared by the whole stage')
        self.stage_of = {site.index: site.stage for site in sites}
        self.maps = nn.ModuleDict({
            str(stage): PaperStageMaps(len(options.priors), options.map_size, heads)
            for stage, heads in heads_of_stage.items()})
        self.blocks = nn.ModuleDict({
            str(site.index): PaperBlockParams(options, site.width // site.num_heads,
                                              site.num_heads) for site in sites})
        # One (H, W, D) float32 R per block and grid size (12.6 MB at 64 x 64 x 768): a few
        # sizes per block, so that varying detection inputs cannot grow it without bound.
        self.response_cache = ParamCache(max_entries=RESPONSES_PER_BLOCK * len(sites))

    def attach(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        for site in sites:
            hook_norm1(host, self, site, before_norm=True)

    def response(self, block_index: int, size: tuple[int, int],
                 device: torch.device | None = None) -> torch.Tensor:
        """R of a block on an (H, W) grid, float32 of shape (H, W, D); cached in inference."""
        params = self.blocks[str(block_index)]
        maps = self.maps[str(self.stage_of[block_index])].coefficients
        device = device or maps.device
        size = (int(size[0]), int(size[1]))
        return self.response_cache.get(
            (block_index, size, device),
            [maps, params.times, params.logits, params.temperature],
            lambda: self._compute_response(block_index, size, device))

    def _compute_response(self, block_index: int, size: tuple[int, int],
                          device: torch.device) -> torch.Tensor:
        params = self.blocks[str(block_index)]
        maps = self.maps[str(self.stage_of[block_index])].coefficients
        lam = cached(laplacian_eigenvalues, int(size[0]), int(size[1]), device)
        resized = resize_coefficients(maps.float(), size, self.options.map_resize)
        return mixed_response(lam, resized, params.times.float(), params.routing().float(),
                              self.options.priors)

    def adapt_map(self, site: BlockSite, x: torch.Tensor, valid: GridSizes | None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """U(x) on each image's valid grid, padding unchanged. x: (B, H, W, D), same out.

        The spectral path runs in float32 with autocast off (bf16 would cost ~1e-2 relative
        error in the two DCT matmuls); the result is cast back to the dtype of ``x``. Without
        autograd, on a CPU, it runs on at most ``ops.threads.inference_threads()`` threads.

        Args:
            site: The block.
            x: Map of shape (B, H, W, D).
            valid: Valid grid of each image, or None: all of it.
            out: Optional (B, H, W, D) tensor to write the result into (no autograd).

        Returns:
            Tensor of shape (B, H, W, D): ``out`` when given.
        """
        self.records[str(site.index)] = True

        def filter_crop(crop: torch.Tensor, into: torch.Tensor | None = None) -> torch.Tensor:
            response = self.response(site.index, crop.shape[1:3], crop.device)
            return spectral_filter(crop.float(), response, into).to(crop.dtype)

        with torch.autocast(device_type=x.device.type, enabled=False), limited_threads(x.device):
            if valid is None and out is not None and out.dtype == torch.float32:
                return filter_crop(x, out)  # the last matmul writes into out
            return apply_within(x, valid, filter_crop, out)

    def auxiliary_losses(self, progress: float) -> dict[str, torch.Tensor]:
        """The entropy reward and routing statistics of the blocks that ran in the last forward.

        Args:
            progress: Fraction of training done, in [0, 1].
        """
        if not self.records:
            return {}
        weights = {block: self.blocks[block].routing() for block in self.records}
        entropies = torch.stack([routing_entropy(w) for w in weights.values()])
        scale = self.options.entropy_weight * entropy_decay(progress)
        terms = {'loss_prior_entropy': -scale * entropies.sum()}
        for block, w in weights.items():
            for prior, value in zip(self.options.priors, w.detach().mean(1)):
                terms[f'paper_w_b{block}_{prior}'] = value
        terms['paper_entropy'] = entropies.detach().mean()
        return terms

    def extra_repr(self) -> str:
        return (f'priors={self.options.priors}, map_size={self.options.map_size}, '
                f'stages={sorted(self.maps, key=int)}, blocks={self.block_indices}')


__all__ = ['MoPPAPaper', 'MoPPAPaperOptions', 'PaperStageMaps', 'PaperBlockParams']
