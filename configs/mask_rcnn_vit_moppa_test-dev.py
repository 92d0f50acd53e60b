# COCO test-dev submission files for the ViT model: format only (no annotations to evaluate).
# python tools/test.py configs/mask_rcnn_vit_moppa_test-dev.py CHECKPOINT
# writes work_dirs/mask_rcnn_vit_moppa_test-dev/results.{bbox,segm}.json to zip and upload.
_base_ = ['./mask_rcnn_vit_moppa.py']

test_pipeline = [  # no annotations to load
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
test_dataloader = dict(
    dataset=dict(
        ann_file='annotations/image_info_test-dev2017.json',
        data_prefix=dict(img='test2017/'),
        pipeline=test_pipeline))
test_evaluator = dict(
    type='CocoMetric',
    metric=['bbox', 'segm'],
    format_only=True,
    ann_file='data/coco/annotations/image_info_test-dev2017.json',
    outfile_prefix='./work_dirs/mask_rcnn_vit_moppa_test-dev/results')
