# The demo with MoPPA, ours (the same as mask_rcnn_vits14_moppa_toy.py, the main demo).
_base_ = ['./mask_rcnn_vits14_moppa_toy.py']
