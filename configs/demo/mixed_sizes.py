# The demo on mixed image sizes: the main demo's model (frozen DINOv2 ViT-S/14 + MoPPA) on the
# toy set with landscape, portrait and square images, so batches are padded and MoPPA's spectral
# priors filter each image on its own valid grid (METHOD.md "Padding"). Make the data with:
#   python tools/data/make_toy_coco.py --out data/toy_coco_mixed --mixed-sizes --num-train 400
# Budget: 150 iterations of 4 images, for a run of minutes on a 2-core CPU. Measured on this
# project's (AMD EPYC without AVX512, so float32 through autocast 'auto'), shared with other jobs
# (load average 8.5): 3.9 s per iteration over iterations 11-20, ~10 min for 150 at that load.
_base_ = ['./mask_rcnn_vits14_moppa_toy.py']

data_root = 'data/toy_coco_mixed/'
max_iters = 150
warmup_iters = 20

# The main demo's keep-ratio pipelines: the long side goes to 320, so objects have the main
# demo's pixel sizes and a batch of a landscape and a portrait image is padded to 320x320 (a
# quarter of each image padding).
train_dataloader = dict(
    batch_size=4,
    # No AspectRatioBatchSampler: grouping images by orientation would avoid the padding that
    # this config is about; a plain batch mixes orientations.
    batch_sampler=None,
    dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup_iters, end=max_iters,
         eta_min_ratio=0.05),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
