"""Adapter hosts on timm Vision Transformers (plain ViT, DINOv2 with registers and LayerScale)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..adapters import BlockSite, MapRestore
from .base import TimmAdapterBackbone
from .input_checks import check_images, check_out_indices, output_size, pad_to_multiple


@MODELS.register_module()
class MoPPAViT(TimmAdapterBackbone):
    """A timm ViT hosting adapters (MoPPA units before the attention of every block by default).

    Single-scale: every output is an NCHW map at ``feature_stride`` (use SimpleFPN for a
    pyramid). Any input size works: it is zero-padded to a multiple of ``feature_stride``; the
    position embedding is resampled by timm (``dynamic_img_size``). When ``feature_stride``
    differs from the patch size (e.g. 16 for a patch-14 DINOv2), the padded image is resized by
    patch / feature_stride first, so the token grid is (H / feature_stride, W / feature_stride).
    Features come from timm's ``forward_intermediates``.

    Args:
        model_name: Any timm VisionTransformer name, e.g. 'vit_base_patch16_224.mae' or
            'vit_small_patch14_reg4_dinov2'.
        out_indices: Blocks whose outputs are returned (negative counts from the end).
        feature_stride: Stride of the outputs; ``None``: the patch size.
        final_norm: Apply the model's final norm to every output.
        **kwargs: See :class:`TimmAdapterBackbone`.
    """

    timm_class = VisionTransformer
    timm_kwargs = dict(dynamic_img_size=True)  # any (padded) input size

    def __init__(self, *, model_name: str = 'vit_base_patch16_224',
                 out_indices: Sequence[int] = (-1,), feature_stride: int | None = None,
                 final_norm: bool = True, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        self.out_indices = check_out_indices(list(out_indices), len(self.model.blocks), 'blocks')
        patch_h, patch_w = self.model.patch_embed.patch_size
        if patch_h != patch_w:
            raise ValueError(f'{model_name}: non-square patches {patch_h}x{patch_w} unsupported')
        self.patch_size = patch_h
        self.feature_stride = feature_stride or patch_h
        self.final_norm_enabled = final_norm
        self.out_channels = [self.model.embed_dim] * len(self.out_indices)
        self.out_strides = [self.feature_stride] * len(self.out_indices)
        self._grid: tuple[int, int] | None = None
        self._sites = [BlockSite(index, block, block.norm1.normalized_shape[0],
                                 block.attn.num_heads, 0, self.feature_stride)
                       for index, block in enumerate(self.model.blocks)]
        self.add_adapters()

    def sites(self) -> list[BlockSite]:
        return self._sites

    def unused_modules(self) -> list[nn.Module]:
        model = self.model
        unused = [model.head, model.fc_norm, *model.blocks[self.out_indices[-1] + 1:]]
        unused += [getattr(model, 'attn_pool', None) or nn.Identity()]
        return unused if self.final_norm_enabled else unused + [model.norm]

    def final_norm(self) -> nn.Module | None:
        return self.model.norm if self.final_norm_enabled else None

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features of a batch of images.

        Args:
            x: Images of shape (B, 3, H, W).

        Returns:
            One map per out index, each (B, D, ceil(H / stride), ceil(W / stride)).
        """
        check_images(x, self.model.patch_embed.proj.in_channels, self.feature_stride,
                     type(self).__name__)
        x = pad_to_multiple(x, self.feature_stride)
        self._grid = output_size(*x.shape[-2:], self.feature_stride)
        if self.feature_stride != self.patch_size:
            size = (self._grid[0] * self.patch_size, self._grid[1] * self.patch_size)
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        return tuple(self.model.forward_intermediates(
            x, indices=self.out_indices, norm=self.final_norm_enabled, stop_early=True,
            output_fmt='NCHW', intermediates_only=True))

    def map_view(self, x: torch.Tensor, site: BlockSite
                 ) -> tuple[torch.Tensor, list[tuple[int, int]] | None, MapRestore]:
        """(B, prefix + H*W, D) tokens -> (B, H, W, D) patch map, valid grids, restore."""
        if self._grid is None:
            raise RuntimeError('adapters on ViT tokens need the token grid: call the '
                               f'{type(self).__name__} backbone, not its timm .model directly')
        (h, w), prefix = self._grid, self.model.num_prefix_tokens
        b, n, _ = x.shape
        if n != prefix + h * w:
            raise ValueError(f'block {site.index}: {n} tokens do not match {prefix} prefix '
                             f'tokens + a {h}x{w} grid')
        restore = MapRestore(x, (h, w), prefix)
        return restore.patches(), self.valid_grids(b, site.stride, (h, w)), restore
