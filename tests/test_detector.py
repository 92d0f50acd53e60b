"""Configs parse and build; every method runs loss / predict / tensor in a detector; optimizer,
parameter report and adapter-only checkpoints."""
import logging
import types
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_SWIN, TINY_VIT
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import moppa_det  # noqa: F401
from moppa_det.engine import parameter_table, strip_frozen_weights, trainable_summary
from moppa_det.engine.hooks import AdapterHostHook
from moppa_det.models.detectors import attach_adapter_hooks

register_all_modules()
CONFIGS = sorted(p for p in (REPO_ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)
COCO_LEAVES = sorted(p.name for p in (REPO_ROOT / 'configs').glob('*.py')
                     if 'test-dev' not in p.name)
TINY_BACKBONES = {'MoPPAViT': dict(TINY_VIT, feature_stride=16, adapter_blocks=None),
                  'MoPPASwin': dict(TINY_SWIN, adapter_blocks=None)}


def tiny_model_cfg(config_path: Path, num_classes: int = 3):
    """The model of a real config with its backbone shrunk and its heads narrowed."""
    cfg = Config.fromfile(str(config_path))
    model = cfg.model
    model.backbone.update(pretrained=False, checkpoint=None,
                          **TINY_BACKBONES[model.backbone.type])
    model.neck.in_channels = 32 if model.backbone.type == 'MoPPAViT' else [16, 32, 64, 128]
    narrow(model, num_classes)
    return cfg, model


def narrow(model, num_classes: int, width: int = 32) -> None:
    """Narrows the pyramid and the heads (the tests exercise structure, not capacity)."""
    model.neck.out_channels = width
    model.rpn_head.update(in_channels=width, feat_channels=width)
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = width
    heads = roi.bbox_head if isinstance(roi.bbox_head, list) else [roi.bbox_head]
    for head in heads:
        head.update(num_classes=num_classes, in_channels=width, fc_out_channels=2 * width)
    roi.mask_head.update(num_classes=num_classes, in_channels=width, conv_out_channels=width)


def build_tiny(config_name: str):
    """A tiny model of a config, connected to its adapters as AdapterHostHook does."""
    cfg, model_cfg = tiny_model_cfg(REPO_ROOT / 'configs' / config_name)
    model = MODELS.build(model_cfg)
    model.init_weights()
    attach_adapter_hooks(model)
    return cfg, model


def units(model):
    return model.backbone.adapters['moppa'].units


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    methods = ('moppa', 'moppa_paper', 'moppa_paper_recipe', 'lora', 'adaptformer', 'frozen',
               'full')
    assert {f'mask_rcnn_{b}_{m}.py' for b in ('vit', 'swin') for m in methods} <= names
    assert {f'{m}.py' for m in methods} | {'cascade_mask_rcnn_swin_moppa.py'} <= names


@pytest.mark.parametrize('config_path', CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_and_builds(config_path):
    cfg, model_cfg = tiny_model_cfg(config_path)
    assert cfg.custom_imports['imports'] == ['moppa_det']
    assert cfg.optim_wrapper.constructor == 'TrainableOptimWrapperConstructor'
    assert 'AdapterHostHook' in [hook['type'] for hook in cfg.custom_hooks]
    model = MODELS.build(model_cfg)
    frozen = model_cfg.backbone.get('frozen', True)
    assert any(p.requires_grad for p in model.backbone.model.parameters()) != frozen


@pytest.mark.parametrize('config_name', COCO_LEAVES)
def test_loss_predict_tensor_modes(config_name):
    cfg, model = build_tiny(config_name)
    packed = demo_mm_inputs(2, [(3, 96, 128), (3, 128, 96)], num_classes=3, with_mask=True)
    frozen_before = {k: v.clone() for k, v in model.backbone.model.state_dict().items()}
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    for _ in range(2):  # step 1 makes zero-init outputs non-zero, so every path has a gradient
        losses = model(**model.data_preprocessor(packed, True), mode='loss')
        parsed, _ = model.parse_losses(losses)
        optim.update_params(parsed)
    for key in ('loss_rpn_cls', 'loss_mask'):  # Cascade R-CNN: 's0.loss_mask', ...
        assert any(name.endswith(key) for name in losses), key
    assert not any('loss' in k for k in losses if k.startswith(('route_', 'paper_')))
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    model.parse_losses(losses)[0].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'unused trainable parameters break DDP: {missing}'
    if model.backbone.frozen:
        for key, value in model.backbone.model.state_dict().items():
            assert torch.equal(value, frozen_before[key]), key

    model.eval()
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        predictions = model(**data, mode='predict')
        features = model(**data, mode='tensor')
    assert len(predictions) == 2 and hasattr(predictions[0].pred_instances, 'masks')
    assert isinstance(features, tuple)

    checkpoint = {'state_dict': model.state_dict(), 'meta': {}}
    strip_frozen_weights(checkpoint)
    _, restored = build_tiny(config_name)
    restored.backbone.model.load_state_dict(model.backbone.model.state_dict())
    restored.backbone._weights_sha256 = None
    restored.load_state_dict(checkpoint['state_dict'], strict=True)
    with torch.no_grad():
        again = restored.eval()(**data, mode='tensor')
    for ours, theirs in zip(again, features):
        torch.testing.assert_close(ours, theirs)


def test_moppa_route_loss_reaches_any_detector():
    for name in ('mask_rcnn_vit_moppa.py', 'cascade_mask_rcnn_swin_moppa.py'):
        _, model = build_tiny(name)
        packed = demo_mm_inputs(1, (3, 64, 96), num_classes=3, with_mask=True)
        losses = model(**model.data_preprocessor(packed, True), mode='loss')
        assert 'loss_route' in losses and 'route_u0_heat' in losses and 'route_entropy' in losses
    _, model_cfg = tiny_model_cfg(REPO_ROOT / 'configs' / 'mask_rcnn_vit_moppa.py')
    unconnected = MODELS.build(model_cfg)
    losses = unconnected(**unconnected.data_preprocessor(packed, True), mode='loss')
    assert 'loss_route' not in losses  # what the hook adds: without it, nothing


def test_detector_hands_image_sizes_to_the_backbone():
    _, model = build_tiny('mask_rcnn_vit_moppa.py')
    seen = []
    model.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(module._pending_image_sizes))
    packed = demo_mm_inputs(2, [(3, 96, 128), (3, 128, 96)], num_classes=3, with_mask=True)
    model(**model.data_preprocessor(packed, True), mode='loss')
    assert seen == [[(96, 128), (128, 96)]]


@pytest.mark.parametrize('weight', [0.0, 0.5])
def test_route_loss_weight_follows_config(weight):
    from moppa_det.models.moppa import route_penalty
    _, model_cfg = tiny_model_cfg(REPO_ROOT / 'configs' / 'mask_rcnn_vit_moppa.py')
    model_cfg.backbone.adapter.route_reg = dict(weight=weight)
    model = MODELS.build(model_cfg)
    attach_adapter_hooks(model)
    for unit in units(model).values():  # non-uniform routing: a non-zero penalty
        torch.nn.init.normal_(unit.router.proj.weight, std=1.0)
    packed = demo_mm_inputs(1, (3, 64, 64), num_classes=3, with_mask=True)
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    stats = model.backbone.adapters['moppa'].route_statistics()
    penalty = route_penalty(torch.stack([s['mean_alpha'] for s in stats.values()]))
    assert penalty > 1e-4
    torch.testing.assert_close(losses['loss_route'], weight * penalty)


def test_route_reg_config_errors_are_named():
    _, model_cfg = tiny_model_cfg(REPO_ROOT / 'configs' / 'mask_rcnn_vit_moppa.py')
    model_cfg.backbone.adapter.route_reg = dict(wieght=1.0)
    with pytest.raises(ValueError, match=r"adapter\['MoPPA'\].*route_reg: unknown key 'wieght'"):
        MODELS.build(model_cfg)


def test_first_release_detector_config_still_builds():
    """MoPPAMaskRCNN with its detector-level route_reg, as in configs of the first release."""
    _, model_cfg = tiny_model_cfg(REPO_ROOT / 'configs' / 'mask_rcnn_vit_moppa.py')
    model_cfg.update(type='MoPPAMaskRCNN', route_reg=dict(weight=0.25))
    model = MODELS.build(model_cfg)
    assert model.backbone.adapters['moppa'].options.route_reg.weight == 0.25
    packed = demo_mm_inputs(1, (3, 64, 64), num_classes=3, with_mask=True)
    assert 'loss_route' in model(**model.data_preprocessor(packed, True), mode='loss')


def test_neck_that_does_not_fit_backbone_is_explained():
    _, model_cfg = tiny_model_cfg(REPO_ROOT / 'configs' / 'mask_rcnn_vit_moppa.py')
    model_cfg.neck.in_channels = 768
    model = MODELS.build(model_cfg)  # a plain MaskRCNN: checked when the run starts
    runner = types.SimpleNamespace(model=model)
    with pytest.raises(ValueError, match=r'model.neck.in_channels=768 .*out_channels=\[32\]'):
        AdapterHostHook().before_run(runner)
    model_cfg.type = 'MoPPAMaskRCNN'  # the first release's detector checks when built
    with pytest.raises(ValueError, match=r'model.neck.in_channels=768'):
        MODELS.build(model_cfg)


def test_optimizer_sees_only_trainable_parameters(caplog):
    cfg, model = build_tiny('mask_rcnn_swin_moppa.py')
    with caplog.at_level(logging.WARNING):
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
    in_optimizer = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    assert 'requires_grad=False' not in caplog.text
    physical = {id(p) for unit in units(model).values() for p in unit.priors.parameters()}
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)
             for p in m.parameters() if p.requires_grad}
    for group in optim.optimizer.param_groups:
        for param in group['params']:
            if id(param) in physical | norms:
                assert group['weight_decay'] == 0.0
    assert max(g['weight_decay'] for g in optim.optimizer.param_groups) == 0.05


def test_custom_keys_reach_the_physical_parameters():
    cfg, model = build_tiny('mask_rcnn_vit_moppa.py')
    cfg.optim_wrapper.paramwise_cfg = dict(norm_decay_mult=0.0, custom_keys={
        '.priors.': dict(lr_mult=10.0, decay_mult=1.0), 'router': dict(lr_mult=2.0)})
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    group_of = {id(p): g for g in optim.optimizer.param_groups for p in g['params']}
    base_lr = cfg.optim_wrapper.optimizer.lr
    for unit in units(model).values():
        for param in unit.priors.parameters():
            assert group_of[id(param)]['lr'] == pytest.approx(10 * base_lr)
            assert group_of[id(param)]['weight_decay'] == 0.0  # decay_mult cannot switch it on
        for param in unit.router.parameters():
            assert group_of[id(param)]['lr'] == pytest.approx(2 * base_lr)


def test_parameter_report():
    _, model = build_tiny('mask_rcnn_vit_moppa.py')
    table = parameter_table(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert f'trainable params: {trainable:,} || all params: {total:,} || trainable%: ' \
           f'{100 * trainable / total:.4f}' == trainable_summary(model)
    count = sum(p.numel() for p in units(model).parameters())
    assert any(line.startswith('adapter: MoPPA') and f'{count:,}' in line
               for line in table.splitlines())
    assert 'backbone (pre-trained)' in table and 'neck' in table and 'heads' in table


def test_trainable_only_checkpoint_reloads_strictly():
    _, model = build_tiny('mask_rcnn_vit_moppa.py')
    checkpoint = {'state_dict': model.state_dict(), 'meta': {}}
    dropped = strip_frozen_weights(checkpoint)
    frozen = len(model.backbone.model.state_dict())
    assert dropped == frozen
    assert not any(k.startswith('backbone.model.') for k in checkpoint['state_dict'])
    assert 'backbone._extra_state' in checkpoint['state_dict']
    model.load_state_dict(checkpoint['state_dict'], strict=True)


def test_ema_state_dict_is_stripped_too():
    _, model = build_tiny('mask_rcnn_vit_moppa.py')
    ema = {'steps': torch.tensor(3),
           **{f'module.{k}': v for k, v in model.state_dict().items()}}
    checkpoint = {'state_dict': model.state_dict(), 'ema_state_dict': ema}
    frozen = len(model.backbone.model.state_dict())
    assert strip_frozen_weights(checkpoint) == 2 * frozen
    assert not any(k.startswith('module.backbone.model.') for k in checkpoint['ema_state_dict'])
    assert 'module.backbone._extra_state' in checkpoint['ema_state_dict']


def test_extract_trainable_tool(tmp_path):
    from tools.extract_trainable import extract

    _, model = build_tiny('mask_rcnn_vit_moppa.py')
    full = tmp_path / 'full.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, full)
    out = tmp_path / 'trainable.pth'
    dropped, size = extract(full, out)
    assert dropped == len(model.backbone.model.state_dict()) and size < full.stat().st_size
    state = torch.load(out, weights_only=True)['state_dict']
    model.load_state_dict(state, strict=True)
    with pytest.raises(FileExistsError, match='--overwrite'):
        extract(full, out)
    with pytest.raises(ValueError, match='holds no frozen'):
        extract(out, tmp_path / 'again.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        extract(tmp_path / 'missing.pth', tmp_path / 'x.pth')


@pytest.mark.parametrize('config_path', CONFIGS, ids=lambda p: p.name)
def test_config_backbone_names_and_tags_exist_in_timm(config_path):
    from moppa_det.models.backbones.timm_factory import check_model_name
    backbone = Config.fromfile(str(config_path)).model.backbone
    check_model_name(backbone.model_name, 'swin' if 'Swin' in backbone.type else 'vit')
