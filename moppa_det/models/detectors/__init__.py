"""Detectors that add the MoPPA units' auxiliary losses."""
from .moppa_mask_rcnn import MoPPAMaskRCNN
from .route_regularized import RouteRegularizedMixin, training_progress

__all__ = ['MoPPAMaskRCNN', 'RouteRegularizedMixin', 'training_progress']
