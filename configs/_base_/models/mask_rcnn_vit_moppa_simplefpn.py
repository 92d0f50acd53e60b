# Mask R-CNN on a frozen timm ViT with MoPPA units + SimpleFPN (ViTDet-style pyramid).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

vit_name = 'vit_base_patch16_224.mae'
vit_width = 768
fpn_width = 256
norm_cfg = dict(type='LN2d')

model = dict(
    type='MoPPAMaskRCNN',
    route_reg=dict(kind='l2', weight=0.01, decay_fraction=None),
    backbone=dict(
        _delete_=True,
        type='MoPPAViT',
        model_name=vit_name,
        pretrained=True,       # timm's source; offline: model.backbone.checkpoint=PATH
        checkpoint=None,
        out_indices=(-1,),
        feature_stride=16,
        moppa=dict(bottleneck=8, router='token', priors=('heat', 'wave', 'poisson')),
        with_cp=False,
        drop_path_rate=0.1),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        in_channels=vit_width,
        out_channels=fpn_width,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5,
        norm_cfg=norm_cfg),
)
