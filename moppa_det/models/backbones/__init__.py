"""MoPPA-wrapped timm backbones registered in MMDetection's MODELS registry."""
from .base import BackboneCheckpointMismatch, TimmMoPPABackbone
from .swin import MoPPASwin
from .timm_factory import BackboneBuildError
from .vit import MoPPAViT

__all__ = ['TimmMoPPABackbone', 'MoPPAViT', 'MoPPASwin', 'BackboneBuildError',
           'BackboneCheckpointMismatch']
