"""Necks: SimpleFPN for single-scale ViT features, and the LN2d norm it uses."""
from .norms import LayerNorm2d
from .simple_fpn import SimpleFPN

__all__ = ['SimpleFPN', 'LayerNorm2d']
