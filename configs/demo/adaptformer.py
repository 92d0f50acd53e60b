# The demo with AdaptFormer (parallel bottleneck beside the MLP) in the same 4 blocks.
_base_ = ['./mask_rcnn_vits14_moppa_toy.py']

model = dict(backbone=dict(adapter=dict(_delete_=True, type='AdaptFormer')))
