"""Registers timm's LayerNorm2d as 'LN2d' (ViTDet's LayerNorm over the channels of NCHW maps).

In MMEngine's root registry: mmcv's ``build_norm_layer`` looks norms up from there, and every
child registry (mmdet's included) falls back to it. It subclasses ``nn.LayerNorm``, so optimizer
constructors treat it as a norm (no weight decay with ``norm_decay_mult=0``) and mmcv names it
'ln'.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from timm.layers import LayerNorm2d

if 'LN2d' not in MMENGINE_MODELS.module_dict:
    MMENGINE_MODELS.register_module('LN2d', module=LayerNorm2d)

__all__ = ['LayerNorm2d']
