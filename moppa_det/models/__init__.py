"""Models registered in MMDetection's registries: backbones, neck, detector, baselines."""
from . import backbones, detectors, necks  # noqa: F401
from .moppa import MoPPAConfig, MoPPAUnit, RouteRegConfig

__all__ = ['MoPPAConfig', 'MoPPAUnit', 'RouteRegConfig']
