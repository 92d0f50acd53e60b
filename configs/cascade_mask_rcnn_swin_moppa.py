# Swin-B (IN-22K) frozen + MoPPA, FPN, Cascade Mask R-CNN, COCO 2017, 1x (12 epochs), 8 GPUs x 2.
# Change model.backbone.adapter as in the Mask R-CNN leaves for the other methods.
_base_ = [
    './_base_/models/cascade_mask_rcnn_swin_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/moppa_runtime.py',
]
