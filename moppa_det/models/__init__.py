"""Models: the torch-only MoPPA unit and baselines, and (with MMDetection) the adapters, the
registered backbones hosting them, the neck and the detector hooks."""
from .. import MMDET_IMPORT_ERROR
from .moppa import MoPPAConfig, MoPPAUnit, RouteRegConfig

if MMDET_IMPORT_ERROR is None:
    from . import adapters, backbones, detectors, necks  # noqa: F401  (registration)

__all__ = ['MoPPAConfig', 'MoPPAUnit', 'RouteRegConfig']
