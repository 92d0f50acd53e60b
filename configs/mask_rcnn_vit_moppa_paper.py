# ViT-B/16 (MAE) frozen + MoPPA as its authors wrote it (METHOD.md, "The authors' formulation").
_base_ = ['./mask_rcnn_vit_moppa.py']

model = dict(backbone=dict(adapter=dict(_delete_=True, type='MoPPAPaper')))
