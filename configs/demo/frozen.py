# The demo with the frozen backbone and no adapter: only the pyramid and the heads train.
_base_ = ['./mask_rcnn_vits14_moppa_toy.py']

model = dict(backbone=dict(adapter=None))
