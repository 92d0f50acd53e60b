# The demo with the backbone fully fine-tuned (all 12 blocks train; no adapter).
_base_ = ['./mask_rcnn_vits14_moppa_toy.py']

model = dict(backbone=dict(adapter=None, frozen=False))
