"""MoPPA-wrapped timm Vision Transformers (plain ViT, DINOv2 with registers and LayerScale)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .base import TimmMoPPABackbone
from .input_checks import check_images, check_out_indices, output_size, pad_to_multiple


@MODELS.register_module()
class MoPPAViT(TimmMoPPABackbone):
    """A frozen timm ViT with a MoPPA unit before the attention of every block.

    Single-scale: every output is an NCHW map at ``feature_stride`` (use SimpleFPN for a
    pyramid). Any input size works: it is zero-padded to a multiple of ``feature_stride``; the
    position embedding is resampled by timm (``dynamic_img_size``). When ``feature_stride``
    differs from the patch size (e.g. 16 for a patch-14 DINOv2), the padded image is resized by
    patch / feature_stride first, so the token grid is (H / feature_stride, W / feature_stride).

    Args:
        model_name: Any timm VisionTransformer name, e.g. 'vit_base_patch16_224.mae' or
            'vit_small_patch14_reg4_dinov2'.
        out_indices: Blocks whose outputs are returned (negative counts from the end).
        feature_stride: Stride of the outputs; ``None``: the patch size.
        final_norm: Apply the model's final norm to every output.
        Others: see :class:`TimmMoPPABackbone`.
    """

    timm_class = VisionTransformer
    timm_kwargs = dict(dynamic_img_size=True)  # any (padded) input size

    def __init__(self, model_name: str = 'vit_base_patch16_224', pretrained: bool = False,
                 checkpoint: str | None = None, out_indices: Sequence[int] = (-1,),
                 feature_stride: int | None = None, final_norm: bool = True,
                 moppa: dict[str, Any] | None = {}, unit_blocks: list[int] | None = None,
                 with_cp: bool = False, autocast_dtype: str | None = None,
                 drop_path_rate: float = 0.0,
                 img_size: int | tuple[int, int] | None = None,
                 model_kwargs: dict[str, Any] | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(model_name, pretrained, checkpoint, moppa, unit_blocks, with_cp,
                         autocast_dtype, drop_path_rate, img_size, model_kwargs, init_cfg)
        self.out_indices = check_out_indices(list(out_indices), len(self.model.blocks), 'blocks')
        patch_h, patch_w = self.model.patch_embed.patch_size
        if patch_h != patch_w:
            raise ValueError(f'{model_name}: non-square patches {patch_h}x{patch_w} unsupported')
        self.patch_size = patch_h
        self.feature_stride = feature_stride or patch_h
        self.final_norm = final_norm
        self.out_channels = [self.model.embed_dim] * len(self.out_indices)
        self.out_strides = [self.feature_stride] * len(self.out_indices)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.blocks)

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
        grid = output_size(*x.shape[-2:], self.feature_stride)
        if self.feature_stride != self.patch_size:
            size = (grid[0] * self.patch_size, grid[1] * self.patch_size)
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        model = self.model
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        self._token_layout = (grid, model.num_prefix_tokens)
        outputs = []
        for index, block in enumerate(model.blocks):
            tokens = self.run_block(block, tokens)
            if index in self.out_indices:
                outputs.append(self._to_map(tokens, grid))
        return tuple(outputs)

    def _to_map(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, prefix + H*W, D) tokens to a (B, D, H, W) map, prefix tokens dropped."""
        if self.final_norm:
            tokens = self.model.norm(tokens)
        patches = tokens[:, self.model.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).contiguous()
