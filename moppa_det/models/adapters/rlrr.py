"""RLRR: W' = W + W * (s_out s_in^T) elementwise and b' = b + db on chosen linear layers.

A forward hook on each target layer adds the update of
:class:`~moppa_det.models.baselines.RLRRUpdate`, computed from the layer's input and its frozen
weight (read from the hooked module at call time, never stored in the adapter), to the output.
On timm's fused qkv only the **value rows** are adapted by default (the authors' ViT code adapts
its separate value projection, not query and key; their Swin code adapts the whole fused qkv:
``qkv_rows='all'``).

Init (the authors' code, feufhd/MoPDO): s_in ~ U(+-sqrt(6 / in)), s_out ~ U(+-sqrt(6)), db = 0,
i.e. ``kaiming_uniform_`` on (1, in) and (out, 1) tensors. **Not an identity at init**: each
weight starts multiplied by 1 + s_out[o] s_in[i]. ``init='identity'`` zeroes s_out instead.

Merging (:meth:`~.base.Adapter.merge`) writes W' and b' into the adapted rows of each layer;
the hooks then pass outputs through. The update scales the frozen weight it reads, so on a
layer that LoRA also adapts, RLRR must be merged first (the host's ``merge_adapters`` orders
and checks this).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..baselines import RLRR_INITS, RLRRUpdate
from .base import LINEAR_ROLES, Adapter, AdapterHost, BlockSite, linear_targets
from .option_checks import as_roles, check_choice
from .registry import ADAPTERS

QKV_ROWS = ('value', 'all')


@dataclass(frozen=True)
class RLRROptions:
    """Options of the ``RLRR`` adapter.

    Attributes:
        targets: Linear layers adapted in each block: 'qkv' (see ``qkv_rows``), 'proj'
            (attention output), 'fc1', 'fc2'; all four by default, as the authors.
        qkv_rows: 'value' (the value third of timm's fused qkv; the authors' ViT) or 'all'
            (the authors' Swin).
        init: 'kaiming' (the authors'; not an identity) or 'identity' (s_out = 0).
    """
    targets: tuple[str, ...] = LINEAR_ROLES
    qkv_rows: str = 'value'
    init: str = 'kaiming'

    def __post_init__(self) -> None:
        object.__setattr__(self, 'targets', as_roles('targets', self.targets))
        check_choice('qkv_rows', self.qkv_rows, QKV_ROWS)
        check_choice('init', self.init, RLRR_INITS)


class LinearHook:
    """Replaces a linear layer's output by ``adapter.adapt_linear(key, weight, input, output)``.

    A class, not a closure, so that ``copy.deepcopy`` of a backbone calls the copy's adapter.
    """

    def __init__(self, adapter: 'RLRR', key: str) -> None:
        self.adapter, self.key = adapter, key

    def __call__(self, module: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.adapter.adapt_linear(self.key, module.weight, args[0], output)


@ADAPTERS.register_module()
class RLRR(Adapter):
    """An :class:`RLRRUpdate` (no weight decay) on each target layer of each adapted block.

    Trainable parameters per target layer: ``in + 2 * rows`` (s_in, s_out, db), where rows is
    ``out`` (D for qkv with ``qkv_rows='value'``); with an MLP ratio of 4 that is 3D (qkv
    value rows), 3D (proj), 9D (fc1) and 6D (fc2): 21 D per block.
    """

    name = 'rlrr'
    Options = RLRROptions
    mergeable = True

    def build(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        # First adapted output row of each layer (2 D for the value rows of qkv, else 0).
        self._first_row: dict[str, int] = {}
        self.updates = nn.ModuleDict()
        for site in sites:
            layers = nn.ModuleDict()
            for role in self.options.targets:
                layer = site.linear(role)
                first = self._adapted_rows(site, role, layer)
                self._first_row[f'{site.index}.{role}'] = first
                layers[role] = RLRRUpdate(layer.in_features, layer.out_features - first,
                                          self.options.init)
            self.updates[str(site.index)] = layers

    def _adapted_rows(self, site: BlockSite, role: str, layer: nn.Linear) -> int:
        if role != 'qkv' or self.options.qkv_rows == 'all':
            return 0
        if layer.out_features % 3:
            raise ValueError(f'RLRR, block {site.index}: qkv has {layer.out_features} outputs, '
                             "not 3 equal parts; use qkv_rows='all'")
        return 2 * layer.out_features // 3  # timm's fused layout: q, k, v

    def attach(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        self.layers = linear_targets(sites, self.options.targets)
        for key, layer in self.layers.items():
            layer.register_forward_hook(LinearHook(self, key))

    def merge_updates(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """W' = W + W * (s_out s_in^T) and b' = b + db on the adapted rows of every layer.

        Raises:
            ValueError: a layer has no bias but its bias shift is non-zero.
        """
        pairs = []
        for key, layer in self.layers.items():
            block, role = key.split('.')
            update, first = self.updates[block][role], self._first_row[key]
            weight = layer.weight.clone()
            weight[first:] += update.delta_weight(layer.weight[first:])
            pairs.append((layer.weight, weight))
            if layer.bias is not None:
                bias = layer.bias.clone()
                bias[first:] += update.bias_shift.to(bias.dtype)
                pairs.append((layer.bias, bias))
            elif update.bias_shift.any():
                raise ValueError(f'RLRR, block {block}: {role} has no bias to merge the bias '
                                 'shift into')
        return pairs

    def adapt_linear(self, key: str, weight: torch.Tensor, x: torch.Tensor,
                     output: torch.Tensor) -> torch.Tensor:
        """The output of W' = W + W * (s_out s_in^T) and b + db on the adapted rows.

        Args:
            key: '{block}.{target}'.
            weight: The layer's frozen weight, (out, in).
            x: The layer's input, (..., in).
            output: W x + b, (..., out).

        Returns:
            (..., out), of the dtype of ``output``.
        """
        if self.merged:
            return output
        block, role = key.split('.')
        first = self._first_row[key]
        update = self.updates[block][role](x, weight[first:]).to(output.dtype)
        if first == 0:
            return output + update
        return torch.cat([output[..., :first], output[..., first:] + update], dim=-1)

    def extra_repr(self) -> str:
        return (f'blocks={self.block_indices}, targets={self.options.targets}, '
                f'qkv_rows={self.options.qkv_rows!r}, init={self.options.init!r}')
