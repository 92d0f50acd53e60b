"""moppa_det: Mixture of Physical Priors Adapters for MMDetection 3.x on timm backbones.

Importing the package registers its backbones, neck, detector, hooks and optimizer constructor
in MMDetection's registries (configs can also use
``custom_imports=dict(imports=['moppa_det'], allow_failed_imports=False)``).
``moppa_det.ops`` is pure torch and imports without MMDetection.
"""
from .version import __version__

try:
    import mmdet  # noqa: F401
except ImportError as error:  # only ``moppa_det.ops`` and ``moppa_det.env`` work without it
    MMDET_IMPORT_ERROR: ImportError | None = error
else:
    MMDET_IMPORT_ERROR = None
    from . import engine, models  # noqa: F401  (registration side effects)

__all__ = ['__version__', 'MMDET_IMPORT_ERROR']
