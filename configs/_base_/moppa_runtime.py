# Runtime shared by every moppa_det config: registrations, the PEFT optimizer, the 1x schedule
# of METHOD.md (AdamW 1e-4, wd 0.05, warm-up 1000 iterations, steps at epochs 8 and 11) and the
# hooks that report parameters and save adapter-only checkpoints.
_base_ = ['mmdet::_base_/default_runtime.py']

custom_imports = dict(imports=['moppa_det'], allow_failed_imports=False)

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TrainableOptimWrapperConstructor',  # only trainable params; no decay on norms/k,c,t,S
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0),
)
auto_scale_lr = dict(enable=False, base_batch_size=16)  # 8 GPUs x 2 images

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
custom_hooks = [
    dict(type='AdapterHostHook'),  # any detector: valid image sizes in, auxiliary losses out
    dict(type='ParameterReportHook'),
    dict(type='TrainableCheckpointHook'),  # checkpoints hold units, neck, heads, optimizer, meta
    # Also added by tools/train.py's runner; listed so that other runners get them too.
    dict(type='RandomStateHook'),  # a killed and resumed run repeats the uninterrupted one
    dict(type='NonFiniteLossHook', action='stop'),  # 'skip' skips steps with a NaN/inf loss
]
# Frozen backbone parameters receive no gradient, but every trainable one does each step.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=False)
