"""MoPPA-wrapped timm Swin Transformers (v1)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmdet.registry import MODELS
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from .base import TimmMoPPABackbone
from .input_checks import check_images, check_out_indices, output_size, pad_to_multiple


@MODELS.register_module()
class MoPPASwin(TimmMoPPABackbone):
    """A frozen timm Swin with a MoPPA unit before the window attention of every block.

    The units act on the whole (B, H, W, C) stage map (a global DCT), not per window. Inputs are
    zero-padded to a multiple of the last stage's stride and the outputs cropped back to
    ceil(H / stride) x ceil(W / stride); timm pads to the window size itself.

    Args:
        model_name: Any timm SwinTransformer name, e.g. 'swin_base_patch4_window7_224'.
        out_indices: Stages whose outputs are returned (NCHW).
        Others: see :class:`TimmMoPPABackbone`.
    """

    timm_class = SwinTransformer
    # Any input size; and window 7 with shifts in every stage, as MMDetection's Swin, whatever
    # the nominal img_size (timm otherwise shrinks windows and drops shifts on small stages).
    timm_kwargs = dict(strict_img_size=False, always_partition=True)

    def __init__(self, model_name: str = 'swin_base_patch4_window7_224', pretrained: bool = False,
                 checkpoint: str | None = None, out_indices: Sequence[int] = (0, 1, 2, 3),
                 moppa: dict[str, Any] | None = {}, unit_blocks: list[int] | None = None,
                 with_cp: bool = False, autocast_dtype: str | None = None,
                 drop_path_rate: float = 0.0,
                 img_size: int | tuple[int, int] | None = None,
                 model_kwargs: dict[str, Any] | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(model_name, pretrained, checkpoint, moppa, unit_blocks, with_cp,
                         autocast_dtype, drop_path_rate, img_size, model_kwargs, init_cfg)
        self.out_indices = check_out_indices(list(out_indices), len(self.model.layers), 'stages')
        info = self.model.feature_info
        self.out_channels = [info[index]['num_chs'] for index in self.out_indices]
        self.out_strides = [info[index]['reduction'] for index in self.out_indices]
        self.pad_multiple = info[-1]['reduction']
        self.patch_size = self.model.patch_embed.patch_size[0]

    def blocks(self) -> list[nn.Module]:
        return [block for stage in self.model.layers for block in stage.blocks]

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
        feature = self.model.patch_embed(pad_to_multiple(x, self.pad_multiple))  # (B, H, W, C)
        outputs = []
        for index, stage in enumerate(self.model.layers):
            feature = stage.downsample(feature)
            for block in stage.blocks:
                feature = self.run_block(block, feature)
            if index in self.out_indices:
                h, w = output_size(height, width, self.model.feature_info[index]['reduction'])
                outputs.append(feature[:, :h, :w].permute(0, 3, 1, 2).contiguous())
        return tuple(outputs)
