"""MoPPA, our formulation (METHOD.md): a bottleneck unit with heat, wave and Poisson priors in
the DCT domain and a per-token router, before the attention of each block, zero-initialised so
the wrapped network starts as the pre-trained one; plus the route regularization loss."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...ops import apply_within
from ..moppa import MoPPAConfig, MoPPAUnit, RouteRegConfig, decayed_weight, route_penalty
from ..moppa.fused import fused_forward
from .base import Adapter, AdapterHost, BlockSite, GridSizes
from .hooks import hook_norm1
from .registry import ADAPTERS


@dataclass(frozen=True)
class MoPPAOptions(MoPPAConfig):
    """The unit options of :class:`MoPPAConfig` and the route regularization.

    Attributes:
        route_reg: Options of :class:`RouteRegConfig` (kind, weight, decay_fraction).
    """
    route_reg: RouteRegConfig | dict[str, Any] = field(default_factory=RouteRegConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.route_reg, RouteRegConfig):
            object.__setattr__(self, 'route_reg', RouteRegConfig.from_dict(self.route_reg,
                                                                       'route_reg'))

    def unit_config(self) -> MoPPAConfig:
        fields = {f.name for f in dataclasses.fields(MoPPAConfig)}
        return MoPPAConfig(**{name: getattr(self, name) for name in fields})


@ADAPTERS.register_module()
class MoPPA(Adapter):
    """One :class:`MoPPAUnit` per block on the block's norm1 output ('after_norm': attention
    sees a + s*Delta(a)) or input ('before_norm'), each image filtered on its valid grid.

    Records per block the mean alpha over the valid tokens (with its graph, for the route
    loss) and the mean per-token routing entropy; not in the units' inference form
    (``eval()`` without autograd through the units, see :meth:`MoPPAUnit.uses_fused_path`),
    where they would serve nothing.
    """

    name = 'moppa'
    Options = MoPPAOptions
    training_options = ('route_reg',)

    def build(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        config = self.options.unit_config()
        self.units = nn.ModuleDict({str(site.index): MoPPAUnit(site.width, config)
                                    for site in sites})

    def attach(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        for site in sites:
            hook_norm1(host, self, site, before_norm=self.options.placement == 'before_norm')

    def adapt_map(self, site: BlockSite, x: torch.Tensor, valid: GridSizes | None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
        """x + s * Delta(x) on each image's valid grid. x: (B, H, W, D) -> (B, H, W, D).

        Args:
            site: The block.
            x: Map of shape (B, H, W, D).
            valid: Valid grid of each image, or None: all of it.
            out: Optional (B, H, W, D) tensor to write the result into (no autograd).

        Returns:
            Tensor of shape (B, H, W, D): ``out`` when given.
        """
        unit = self.units[str(site.index)]
        if unit.uses_fused_path(x):
            if valid is None:
                return fused_forward(unit, x, out)
            return apply_within(x, valid, unit, out)
        alphas, entropies, counts = [], [], []

        def adapt(crop: torch.Tensor) -> torch.Tensor:
            out = unit(crop)
            alphas.append(unit.last_mean_alpha)
            entropies.append(unit.last_token_entropy)
            counts.append(crop.shape[0] * crop.shape[1] * crop.shape[2])
            return out

        y = apply_within(x, valid, adapt, out)
        weights = torch.tensor(counts, dtype=torch.float32, device=x.device)
        weights = weights / weights.sum()
        self.records[str(site.index)] = dict(
            mean_alpha=(torch.stack(alphas) * weights[:, None]).sum(0),
            entropy=(torch.stack(entropies) * weights).sum())
        return y

    def route_statistics(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per unit of the last forward: 'mean_alpha' (P,) with grad, 'entropy' ()."""
        return dict(self.records)

    def auxiliary_losses(self, progress: float) -> dict[str, torch.Tensor]:
        """``loss_route`` and, for logging, ``route_u{block}_{prior}`` and ``route_entropy``."""
        if not self.records:
            return {}
        reg = self.options.route_reg
        mean_alpha = torch.stack([r['mean_alpha'] for r in self.records.values()])  # (U, P)
        weight = decayed_weight(reg.weight, reg.decay_fraction, progress)
        terms = {'loss_route': weight * route_penalty(mean_alpha, reg.kind)}
        for block, record in self.records.items():
            for prior, value in zip(self.options.priors, record['mean_alpha'].detach()):
                terms[f'route_u{block}_{prior}'] = value
        terms['route_entropy'] = torch.stack(
            [r['entropy'] for r in self.records.values()]).mean()
        return terms
