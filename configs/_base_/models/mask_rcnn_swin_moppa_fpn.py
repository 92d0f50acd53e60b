# Mask R-CNN on a frozen timm Swin with MoPPA units + the standard FPN.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

swin_name = 'swin_base_patch4_window7_224.ms_in22k'
swin_widths = [128, 256, 512, 1024]  # Swin-B stage widths (checked against the backbone in tests)

model = dict(
    type='MoPPAMaskRCNN',
    route_reg=dict(kind='l2', weight=0.01, decay_fraction=None),
    backbone=dict(
        _delete_=True,
        type='MoPPASwin',
        model_name=swin_name,
        pretrained=True,       # timm's source; offline: model.backbone.checkpoint=PATH
        checkpoint=None,
        out_indices=(0, 1, 2, 3),
        moppa=dict(bottleneck=8, router='token', priors=('heat', 'wave', 'poisson')),
        with_cp=False,
        drop_path_rate=0.2),
    neck=dict(in_channels=swin_widths),
)
