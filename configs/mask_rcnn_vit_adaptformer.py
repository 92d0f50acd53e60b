# ViT-B/16 (MAE) frozen + AdaptFormer (a parallel bottleneck beside every MLP).
_base_ = ['./mask_rcnn_vit_moppa.py']

model = dict(backbone=dict(adapter=dict(_delete_=True, type='AdaptFormer')))
