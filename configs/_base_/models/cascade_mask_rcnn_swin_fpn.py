# Cascade Mask R-CNN on a frozen timm Swin hosting adapters (MoPPA by default) + FPN, the
# detector of the Swin PEFT peers' COCO tables.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py']

swin_name = 'swin_base_patch4_window7_224.ms_in22k'
swin_widths = [128, 256, 512, 1024]

model = dict(
    backbone=dict(
        _delete_=True,
        type='MoPPASwin',
        model_name=swin_name,
        pretrained=True,       # timm's source; offline: model.backbone.checkpoint=PATH
        checkpoint=None,
        out_indices=(0, 1, 2, 3),
        adapter=dict(type='MoPPA', bottleneck=8, router='token',
                     priors=('heat', 'wave', 'poisson'),
                     route_reg=dict(kind='l2', weight=0.01, decay_fraction=None)),
        adapter_blocks=None,
        with_cp=False,
        drop_path_rate=0.2),
    neck=dict(in_channels=swin_widths),
)
