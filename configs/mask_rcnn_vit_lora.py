# ViT-B/16 (MAE) frozen + LoRA (rank 8 on the fused qkv of every block).
_base_ = ['./mask_rcnn_vit_moppa.py']

model = dict(backbone=dict(adapter=dict(_delete_=True, type='LoRA', rank=8, targets=('qkv',))))
