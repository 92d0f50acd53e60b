"""Adapter hosts on timm Swin Transformers (v1)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmdet.registry import MODELS
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from ..adapters import BlockSite, MapRestore
from .base import TimmAdapterBackbone
from .input_checks import check_images, check_out_indices, output_size, pad_to_multiple


@MODELS.register_module()
class MoPPASwin(TimmAdapterBackbone):
    """A timm Swin hosting adapters (MoPPA units before the window attention by default).

    Map adapters act on the whole (B, H, W, C) stage map (a global DCT), not per window. Inputs
    are zero-padded to a multiple of the last stage's stride and the outputs cropped back to
    ceil(H / stride) x ceil(W / stride); timm pads to the window size itself. Features come
    from timm's ``forward_intermediates``.

    Args:
        model_name: Any timm SwinTransformer name, e.g. 'swin_base_patch4_window7_224'.
        out_indices: Stages whose outputs are returned (NCHW).
        **kwargs: See :class:`TimmAdapterBackbone`.
    """

    timm_class = SwinTransformer
    # Any input size; and window 7 with shifts in every stage, as MMDetection's Swin, whatever
    # the nominal img_size (timm otherwise shrinks windows and drops shifts on small stages).
    timm_kwargs = dict(strict_img_size=False, always_partition=True)

    def __init__(self, *, model_name: str = 'swin_base_patch4_window7_224',
                 out_indices: Sequence[int] = (0, 1, 2, 3), **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self.out_indices = check_out_indices(list(out_indices), len(self.model.layers), 'stages')
        info = self.model.feature_info
        self.out_channels = [info[index]['num_chs'] for index in self.out_indices]
        self.out_strides = [info[index]['reduction'] for index in self.out_indices]
        self.pad_multiple = info[-1]['reduction']
        self.patch_size = self.model.patch_embed.patch_size[0]
        self._sites = self._describe_blocks()
        self.add_adapters()

    def _describe_blocks(self) -> list[BlockSite]:
        sites: list[BlockSite] = []
        for stage_index, stage in enumerate(self.model.layers):
            stride = self.model.feature_info[stage_index]['reduction']
            for block in stage.blocks:
                sites.append(BlockSite(len(sites), block, block.norm1.normalized_shape[0],
                                       block.attn.num_heads, stage_index, stride))
        return sites

    def unused_modules(self) -> list[nn.Module]:
        # timm applies the final norm only to the last stage's classifier features.
        return [self.model.norm, self.model.head, *self.model.layers[self.out_indices[-1] + 1:]]

    def sites(self) -> list[BlockSite]:
        return self._sites

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Multi-scale features of a batch of images.

        Args:
            x: Images of shape (B, 3, H, W).

        Returns:
            One NCHW map per out index, stage i of shape (B, C_i, ceil(H / s_i), ceil(W / s_i)).
        """
        check_images(x, self.model.patch_embed.proj.in_channels, self.patch_size,
                     type(self).__name__)
        height, width = x.shape[-2:]
        maps = self.model.forward_intermediates(
            pad_to_multiple(x, self.pad_multiple), indices=self.out_indices, stop_early=True,
            intermediates_only=True)
        return tuple(feature[..., :h, :w].contiguous() for feature, (h, w) in zip(
            maps, (output_size(height, width, stride) for stride in self.out_strides)))

    def map_view(self, x: torch.Tensor, site: BlockSite
                 ) -> tuple[torch.Tensor, list[tuple[int, int]] | None, MapRestore]:
        """A (B, H, W, C) stage map is already a map: itself, its valid grids, identity."""
        if x.dim() != 4:
            raise ValueError(f'block {site.index}: expected a (B, H, W, C) map, got '
                             f'{tuple(x.shape)}')
        return x, self.valid_grids(x.shape[0], site.stride, tuple(x.shape[1:3])), MapRestore(x)
