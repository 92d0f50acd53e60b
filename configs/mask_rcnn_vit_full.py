# ViT-B/16 (MAE) fully fine-tuned, no adapter (the upper baseline; same optimizer recipe).
_base_ = ['./mask_rcnn_vit_moppa.py']

model = dict(backbone=dict(adapter=None, frozen=False))
