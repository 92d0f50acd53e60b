# Mask R-CNN on a frozen timm Swin hosting adapters (MoPPA by default) + the standard FPN.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', './swin_b_backbone.py']

model = dict(
    type='MaskRCNN',  # any detector: AdapterHostHook connects the adapters' losses
    backbone={{_base_.swin_backbone}},
    neck=dict(in_channels={{_base_.swin_widths}}),
)
