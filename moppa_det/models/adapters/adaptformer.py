"""AdaptFormer: a bottleneck parallel to each adapted block's MLP branch, through hooks.

x <- x + LS2(MLP(norm2(x))) + s * up(relu(down(x))): the bottleneck
(:class:`~moppa_det.models.baselines.AdaptFormerAdapter`) reads the residual stream x where
norm2 reads it (a pre-hook captures it) and its output is added to the MLP branch's last module
(LayerScale ``ls2`` where the block has one, else the MLP). As in AdaptFormer's code, the
bottleneck has no norm of its own. One difference: the addition happens before the block's
drop-path (AdaptFormer adds after it), which only matters with ``drop_path_rate > 0``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..baselines import AdaptFormerAdapter
from .base import Adapter, AdapterHost, BlockSite
from .hooks import hook_input, hook_output
from .option_checks import check_bool, check_dropout, check_number, check_positive_int
from .registry import ADAPTERS


@dataclass(frozen=True)
class AdaptFormerOptions:
    """Options of the ``AdaptFormer`` adapter.

    Attributes:
        bottleneck: Hidden width r (AdaptFormer's default, 64).
        scale: The factor s on the bottleneck's output (AdaptFormer's 0.1).
        learnable_scale: Train s (one scalar per block), starting at ``scale``.
        dropout: Dropout probability after the ReLU.
    """
    bottleneck: int = 64
    scale: float = 0.1
    learnable_scale: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int('bottleneck', self.bottleneck)
        check_number('scale', self.scale)
        check_bool('learnable_scale', self.learnable_scale)
        check_dropout('dropout', self.dropout)


@ADAPTERS.register_module()
class AdaptFormer(Adapter):
    """One :class:`AdaptFormerAdapter` beside the MLP of each adapted block.

    Identity at init (up-projection zero). Trainable parameters per block of width D:
    ``2 * D * r + r + D``, plus 1 with ``learnable_scale``.
    """

    name = 'adaptformer'
    Options = AdaptFormerOptions

    def build(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        options = self.options
        self.bottlenecks = nn.ModuleDict({
            str(site.index): AdaptFormerAdapter(site.width, options.bottleneck, options.scale,
                                                options.learnable_scale, options.dropout)
            for site in sites})
        # The residual stream of each block between norm2's pre-hook and the MLP branch's hook.
        self._stream: dict[str, torch.Tensor] = {}

    def attach(self, host: AdapterHost, sites: list[BlockSite]) -> None:
        for site in sites:
            hook_input(site.norm2, self, str(site.index))
            hook_output(site.mlp_branch_output, self, str(site.index))

    def capture(self, key: str, x: torch.Tensor) -> None:
        """Keeps block ``key``'s norm2 input (B, N, D) for :meth:`adapt_output`."""
        self._stream[key] = x

    def adapt_output(self, key: str, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The MLP branch's output plus s * up(relu(down(stream))).

        Args:
            key: The block index.
            x: The input of the hooked module (unused).
            output: The MLP branch's output, (B, N, D).

        Returns:
            (B, N, D), of the dtype of ``output``.
        """
        stream = self._stream.pop(key, None)  # popped: no activation outlives its block
        if stream is None:
            raise RuntimeError(f'AdaptFormer, block {key}: the MLP branch ran without its '
                               'norm2 input being captured (was norm2 bypassed?)')
        return output + self.bottlenecks[key](stream).to(output.dtype)

    def clear_records(self) -> None:
        super().clear_records()
        self._stream = {}

    def extra_repr(self) -> str:
        return f'blocks={self.block_indices}'
