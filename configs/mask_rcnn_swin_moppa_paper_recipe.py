# Swin-B (IN-22K) frozen + the authors' whole trainable set: their MoPPA units, RLRR and SSF.
_base_ = ['./mask_rcnn_swin_moppa.py']

model = dict(backbone=dict(adapter=[dict(type='MoPPAPaper'), dict(type='RLRR'), dict(type='SSF')]))
