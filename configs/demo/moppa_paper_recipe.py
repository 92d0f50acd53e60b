# The demo with the authors' whole trainable set (their MoPPA units, RLRR, SSF) in the same 4
# blocks; SSF's patch-embedding site is off so the backward pass stops at block 8 as for every
# other method (its final-norm site stays).
_base_ = ['./mask_rcnn_vits14_moppa_toy.py']

model = dict(backbone=dict(adapter=[
    dict(type='MoPPAPaper'), dict(type='RLRR'), dict(type='SSF', patch_embed=False)]))
