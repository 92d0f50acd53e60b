"""Adapter hosts on timm backbones, registered in MMDetection's MODELS registry."""
from .base import TimmAdapterBackbone
from .meta import BackboneCheckpointMismatch
from .swin import MoPPASwin
from .timm_factory import BackboneBuildError
from .vit import MoPPAViT

__all__ = ['TimmAdapterBackbone', 'MoPPAViT', 'MoPPASwin', 'BackboneBuildError',
           'BackboneCheckpointMismatch']
