# Swin-B (IN-22K) frozen, no adapter: only FPN and the heads train (the lower baseline).
_base_ = ['./mask_rcnn_swin_moppa.py']

model = dict(backbone=dict(adapter=None))
