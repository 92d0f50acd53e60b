# Swin-B (IN-22K) frozen + MoPPA, FPN, Mask R-CNN, COCO 2017, 1x (12 epochs), 8 GPUs x 2.
_base_ = [
    './_base_/models/mask_rcnn_swin_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/moppa_runtime.py',
]
