"""Detectors connected to their backbone's adapters (any MMDetection detector via hooks)."""
from .adapter_hooks import attach_adapter_hooks, image_sizes
from .checks import check_neck_fits_backbone
from .moppa_mask_rcnn import MoPPAMaskRCNN

__all__ = ['MoPPAMaskRCNN', 'attach_adapter_hooks', 'check_neck_fits_backbone', 'image_sizes']
