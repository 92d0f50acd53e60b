"""Necks: SimpleFPN for single-scale ViT features."""
from .layer_norm_2d import LayerNorm2d
from .simple_fpn import SimpleFPN

__all__ = ['SimpleFPN', 'LayerNorm2d']
