# Mask R-CNN on a frozen timm ViT hosting adapters (MoPPA by default) + SimpleFPN (ViTDet).
# Leaves change `model.backbone.adapter` (see configs/README: one leaf per method).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

vit_name = 'vit_base_patch16_224.mae'
vit_width = 768
fpn_width = 256
norm_cfg = dict(type='LN2d')

model = dict(
    type='MaskRCNN',  # any detector: AdapterHostHook connects the adapters' losses
    backbone=dict(
        _delete_=True,
        type='MoPPAViT',
        model_name=vit_name,
        pretrained=True,       # timm's source; offline: model.backbone.checkpoint=PATH
        checkpoint=None,
        out_indices=(-1,),
        feature_stride=16,
        adapter=dict(type='MoPPA', bottleneck=8, router='token',
                     priors=('heat', 'wave', 'poisson'),
                     route_reg=dict(kind='l2', weight=0.01, decay_fraction=None)),
        adapter_blocks=None,   # every block
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
