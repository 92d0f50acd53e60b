# Swin-B (IN-22K) fully fine-tuned, no adapter (the upper baseline; same optimizer recipe).
_base_ = ['./mask_rcnn_swin_moppa.py']

model = dict(backbone=dict(adapter=None, frozen=False))
