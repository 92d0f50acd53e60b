# Cascade Mask R-CNN on a frozen timm Swin hosting adapters (MoPPA by default) + FPN, the
# detector of the Swin PEFT peers' COCO tables.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py', './swin_b_backbone.py']

model = dict(
    backbone={{_base_.swin_backbone}},
    neck=dict(in_channels={{_base_.swin_widths}}),
)
