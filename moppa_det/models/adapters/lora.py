"""LoRA on the blocks' linear layers: y = W x + b + (alpha / r) B A x, through output hooks.

The pre-trained ``nn.Linear`` stays in place (state-dict names stay timm's); a forward hook adds
the rank-r update of :class:`~moppa_det.models.baselines.LoRAUpdate`, computed from the layer's
input, to its output.

Merging (:meth:`~.base.Adapter.merge`) adds ``(alpha / r) B A`` to each target's weight, as
PEFT's ``merge``; the hooks then pass the layer's output through unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..baselines import LoRAUpdate
from .base import Adapter, AdapterHost, BlockSite, linear_targets
from .hooks import hook_output
from .option_checks import as_roles, check_dropout, check_number, check_positive_int
from .registry import ADAPTERS


@dataclass(frozen=True)
class LoRAOptions:
    """Options of the ``LoRA`` adapter.

    Attributes:
        rank: Rank r of each update.
        alpha: Scaling numerator (update * alpha / r). ``None`` (the default) means alpha = r,
            a scaling of 1 at every rank, so a rank sweep does not also change the update's
            step size; it equals PEFT's default (r = 8, lora_alpha = 8) at r = 8.
        dropout: Dropout probability on each update's input.
        targets: Linear layers adapted in each block, any of 'qkv' (timm's fused q, k, v
            projection: all three), 'proj' (attention output), 'fc1', 'fc2'.
    """
    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = ('qkv',)

    def __post_init__(self) -> None:
        check_positive_int('rank', self.rank)
        if self.alpha is not None:
            check_number('alpha', self.alpha, 0.0, low_open=True)
        check_dropout('dropout', self.dropout)
        object.__setattr__(self, 'targets', as_roles('targets', self.targets))

    @property
    def scaling_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


@ADAPTERS.register_module()
class LoRA(Adapter):
    """A :class:`LoRAUpdate` on each target linear layer of each adapted block.

    Identity at init (B = 0). Trainable parameters: ``r * (in + out)`` per target and block,
    e.g. ``r * 4D`` on qkv, ``r * 2D`` on proj, ``r * 5D`` on fc1 or fc2 (MLP ratio 4).

    Parameters live in ``updates[block][target]`` (``lora_a`` (r, in), ``lora_b`` (out, r)).
    """

    name = 'lora'
    Options = LoRAOptions
    mergeable = True

    def build(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        options = self.options
        self.updates = nn.ModuleDict()
        for site in sites:
            self.updates[str(site.index)] = nn.ModuleDict(
                {role: self._update(site.linear(role)) for role in options.targets})

    def _update(self, layer: nn.Linear) -> LoRAUpdate:
        options = self.options
        return LoRAUpdate(layer.in_features, layer.out_features, options.rank,
                          options.scaling_alpha, options.dropout)

    def attach(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        self.layers = linear_targets(sites, self.options.targets)
        for key, layer in self.layers.items():
            hook_output(layer, self, key)

    def delta_weight(self, key: str) -> torch.Tensor:
        """(alpha / r) B A of target ``key``, shape (out, in), in the layer's dtype."""
        block, role = key.split('.')
        update = self.updates[block][role]
        weight = self.layers[key].weight
        return ((update.lora_b @ update.lora_a) * update.scaling).to(weight.dtype)

    def merge_updates(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """W + (alpha / r) B A for every target layer."""
        return [(layer.weight, layer.weight + self.delta_weight(key))
                for key, layer in self.layers.items()]

    def adapt_output(self, key: str, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """W x + b + (alpha / r) B A x.

        Args:
            key: '{block}.{target}'.
            x: The layer's input, (..., in).
            output: The layer's output W x + b, (..., out).

        Returns:
            (..., out), of the dtype of ``output``.
        """
        if self.merged:
            return output
        block, role = key.split('.')
        return output + self.updates[block][role](x).to(output.dtype)

    def extra_repr(self) -> str:
        return f'blocks={self.block_indices}, targets={self.options.targets}'

