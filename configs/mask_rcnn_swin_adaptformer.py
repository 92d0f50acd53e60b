# Swin-B (IN-22K) frozen + AdaptFormer (a parallel bottleneck beside every MLP).
_base_ = ['./mask_rcnn_swin_moppa.py']

model = dict(backbone=dict(adapter=dict(_delete_=True, type='AdaptFormer')))
