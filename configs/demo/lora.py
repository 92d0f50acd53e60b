# The demo with LoRA (rank 8 on the fused qkv) in the same 4 blocks.
_base_ = ['./mask_rcnn_vits14_moppa_toy.py']

model = dict(backbone=dict(adapter=dict(_delete_=True, type='LoRA', rank=8, targets=('qkv',))))
