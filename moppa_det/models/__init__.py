"""Models: the torch-only MoPPA unit and baselines, and (with MMDetection) the registered
backbones, neck and detector."""
from .. import MMDET_IMPORT_ERROR
from .moppa import MoPPAConfig, MoPPAUnit, RouteRegConfig

if MMDET_IMPORT_ERROR is None:
    from . import backbones, detectors, necks  # noqa: F401  (registration)

__all__ = ['MoPPAConfig', 'MoPPAUnit', 'RouteRegConfig']
