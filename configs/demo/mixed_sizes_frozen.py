# The mixed-size demo with the frozen backbone and no adapter: only the pyramid and the heads
# train (the baseline for configs/demo/mixed_sizes.py, same data and schedule).
_base_ = ['./mixed_sizes.py']

model = dict(backbone=dict(adapter=None))
