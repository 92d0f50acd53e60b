# A frozen timm Swin-B (IN-22K) hosting MoPPA in every block: the backbone of the Swin detectors.
swin_widths = [128, 256, 512, 1024]  # Swin-B stage widths (checked against the backbone in tests)
swin_backbone = dict(
    _delete_=True,  # replaces the ResNet of MMDetection's detector bases
    type='MoPPASwin',
    model_name='swin_base_patch4_window7_224.ms_in22k',
    pretrained=True,       # timm's source; offline: model.backbone.checkpoint=PATH
    checkpoint=None,
    out_indices=(0, 1, 2, 3),
    adapter=dict(type='MoPPA', bottleneck=8, router='token', priors=('heat', 'wave', 'poisson'),
                 route_reg=dict(kind='l2', weight=0.01, decay_fraction=None)),
    adapter_blocks=None,   # every block
    with_cp=False,
    drop_path_rate=0.2)
