"""Pure-torch spectral operators of MoPPA (no MMEngine/MMDetection/timm imports)."""
from .dct import clear_cache, dct2, dct_matrix, idct2, laplacian_eigenvalues
from .priors import (
                     POISSON_MODES,
                     PRIOR_NAMES,
                     RESIZE_MODES,
                     SOURCE_MODES,
                     PhysicalPriors,
                     heat_gain,
                     inverse_softplus,
                     poisson_gain,
                     wave_gain,
)
from .threads import inference_threads, set_inference_threads
from .valid_grid import apply_within, valid_groups, valid_mask

__all__ = [
    'dct_matrix', 'laplacian_eigenvalues', 'dct2', 'idct2', 'clear_cache', 'PhysicalPriors',
    'heat_gain', 'wave_gain', 'poisson_gain', 'inverse_softplus', 'PRIOR_NAMES',
    'POISSON_MODES', 'SOURCE_MODES', 'RESIZE_MODES', 'apply_within', 'valid_groups', 'valid_mask',
    'inference_threads', 'set_inference_threads'
]
