# Swin-B (IN-22K) frozen + MoPPA as its authors wrote it (METHOD.md, "The authors' formulation").
_base_ = ['./mask_rcnn_swin_moppa.py']

model = dict(backbone=dict(adapter=dict(_delete_=True, type='MoPPAPaper')))
