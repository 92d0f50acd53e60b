# ViT-B/16 (MAE) frozen, no adapter: only SimpleFPN and the heads train (the lower baseline).
_base_ = ['./mask_rcnn_vit_moppa.py']

model = dict(backbone=dict(adapter=None))
