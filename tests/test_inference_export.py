"""Inference of adapted backbones: caches, merging, ONNX export, torch.compile graph breaks."""
import copy

import pytest
import torch
from conftest import REPO_ROOT, TINY_SWIN, TINY_VIT

from moppa_det.models.adapters.inference import set_inference_caches
from moppa_det.models.backbones import MoPPASwin, MoPPAViT
from moppa_det.models.backbones.meta import BackboneCheckpointMismatch

IMAGES = {'vit': (2, 3, 64, 96), 'swin': (2, 3, 64, 96)}
ADAPTERS = ('MoPPA', 'MoPPAPaper', 'LoRA', 'AdaptFormer', 'SSF', 'RLRR')
ALL_ROLES = ['qkv', 'proj', 'fc1', 'fc2']


def build(kind, adapter):
    if kind == 'vit':
        return MoPPAViT(**TINY_VIT, feature_stride=16, adapter=adapter)
    return MoPPASwin(**TINY_SWIN, adapter=adapter)


def perturbed(kind, adapter, std=0.1):
    """A backbone in eval() whose adapter parameters are moved off their init."""
    backbone = build(kind, adapter).eval()
    with torch.no_grad():
        for param in backbone.adapters.parameters():
            param.add_(torch.randn_like(param) * std)
    return backbone


def images(kind, seed=1, shape=None):
    return torch.randn(*(shape or IMAGES[kind]), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def run(backbone, x, sizes=None):
    backbone.set_image_sizes(sizes)
    return torch.cat([out.flatten() for out in backbone(x)])


@torch.no_grad()
def uncached(backbone, x, sizes=None):
    """The outputs with every value computed as in training (caches off), caches back on."""
    set_inference_caches(backbone, False)
    try:
        return run(backbone, x, sizes)
    finally:
        set_inference_caches(backbone, True)


def spectral_caches(backbone):
    adapters = backbone.adapters
    if 'moppa_paper' in adapters:
        return [adapters['moppa_paper'].response_cache]
    units = adapters['moppa'].units.values()
    return [unit.priors.filter_cache for unit in units] + [unit.fused_cache for unit in units]


def assert_same(actual, expected, adapter):
    """Bit for bit for MoPPAPaper, whose caches change no operation; to float32 rounding for
    MoPPA, whose inference form (one matmul for the down-projection and the router, one for
    mixing the priors, up-projection and residual) adds its terms in other orders."""
    if adapter == 'MoPPAPaper':
        assert torch.equal(actual, expected)
        return
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6 * scale)


# ------------------------------------------------------------------ inference caches
@pytest.mark.parametrize('kind', ['vit', 'swin'])
@pytest.mark.parametrize('adapter', ['MoPPA', 'MoPPAPaper'])
def test_cached_inference_equals_the_training_computation(kind, adapter):
    backbone = perturbed(kind, adapter)
    x = images(kind)
    sizes = [(64, 96), (48, 64)]  # one image on its own valid grid
    for grids in (sizes, None):  # cropped groups, and the whole batch written in place
        first, second = run(backbone, x, grids), run(backbone, x, grids)
        assert torch.equal(first, second)
        expected = uncached(backbone, x, grids)
        assert_same(first, expected, adapter)
        assert (expected - run(build(kind, None).eval(), x)).abs().max() > 1e-2
    assert all(cache.hits > 0 for cache in spectral_caches(backbone))


@pytest.mark.parametrize('kind', ['vit', 'swin'])
@pytest.mark.parametrize('adapter', ['MoPPA', 'MoPPAPaper'])
def test_writing_into_the_hook_output_equals_the_functional_form(kind, adapter):
    """Without autograd the adapters write into the tensor the hook returns (prefix tokens
    copied once); with autograd on (frozen adapters, cached values still used) they return a
    new map that the host joins to the prefix tokens: the same numbers."""
    backbone = perturbed(kind, adapter)
    backbone.adapters.requires_grad_(False)
    x = images(kind)
    written = run(backbone, x)
    with torch.enable_grad():
        functional = torch.cat([out.flatten() for out in backbone(x)])
    assert all(cache.hits > 0 for cache in spectral_caches(backbone))
    assert_same(written, functional, adapter)


def test_moppa_inference_records_no_routing_statistics():
    backbone = perturbed('vit', 'MoPPA')
    run(backbone, images('vit'))
    assert backbone.adapters['moppa'].records == {} and backbone.auxiliary_losses() == {}
    backbone.train()(images('vit'))
    assert {'loss_route', 'route_entropy'} <= set(backbone.auxiliary_losses())


@pytest.mark.parametrize('adapter', ['MoPPA', 'MoPPAPaper'])
def test_an_optimizer_step_in_eval_invalidates_the_cache(adapter):
    backbone = perturbed('vit', adapter)
    x = images('vit')
    before = run(backbone, x)
    assert all(len(cache) for cache in spectral_caches(backbone))
    optimizer = torch.optim.AdamW(backbone.adapters.parameters(), lr=0.05)
    loss = sum(out.square().mean() for out in backbone(x))  # eval, grad on: cache bypassed
    loss.backward()
    assert all(p.grad is not None for p in backbone.adapters.parameters())
    optimizer.step()
    after = run(backbone, x)
    assert not torch.equal(after, before)
    assert_same(after, uncached(backbone, x), adapter)


@pytest.mark.parametrize('adapter', ['MoPPA', 'MoPPAPaper'])
def test_load_state_dict_data_assignment_and_new_grid_invalidate(adapter):
    backbone = perturbed('vit', adapter)
    other = perturbed('vit', adapter)
    other.model.load_state_dict(backbone.model.state_dict())
    x, wide = images('vit'), images('vit', shape=(2, 3, 64, 128))
    run(backbone, x)
    backbone.load_state_dict(other.state_dict())
    assert torch.equal(run(backbone, x), run(other, x))
    assert_same(run(backbone, wide), uncached(backbone, wide), adapter)  # a new grid size
    param = next(iter(backbone.adapters.parameters()))
    param.data = param.data * 1.5  # new storage
    changed = run(backbone, x)
    assert not torch.allclose(changed, run(other, x), atol=1e-3)
    assert_same(changed, uncached(backbone, x), adapter)


@pytest.mark.parametrize('adapter', ['MoPPA', 'MoPPAPaper'])
def test_train_clears_the_caches(adapter):
    backbone = perturbed('vit', adapter)
    run(backbone, images('vit'))
    caches = spectral_caches(backbone)
    assert all(len(cache) for cache in caches)
    backbone.train()
    assert all(len(cache) == 0 for cache in caches)


# ------------------------------------------------------------------ merge / unmerge
MERGE_SPECS = [dict(type='LoRA', rank=2, targets=ALL_ROLES),
               dict(type='RLRR'),
               dict(type='RLRR', qkv_rows='all'),
               dict(type='SSF', norm1=True),
               [dict(type='LoRA', rank=2, targets=['qkv', 'fc1']), dict(type='RLRR'),
                dict(type='SSF')],
               [dict(type='MoPPAPaper'), dict(type='RLRR'), dict(type='SSF')]]


def frozen_copy(backbone):
    return {name: value.clone() for name, value in backbone.model.state_dict().items()}


@pytest.mark.parametrize('kind', ['vit', 'swin'])
@pytest.mark.parametrize('spec', MERGE_SPECS, ids=str)
def test_merge_matches_and_unmerge_restores_bit_for_bit(kind, spec):
    backbone = perturbed(kind, spec)
    x = images(kind)
    weights, expected = frozen_copy(backbone), run(backbone, x)
    merged = backbone.merge_adapters()
    assert merged and backbone.merged_adapters == merged
    assert any(not torch.equal(v, weights[k]) for k, v in backbone.model.state_dict().items())
    torch.testing.assert_close(run(backbone, x), expected, rtol=1e-5, atol=1e-5)
    assert backbone.meta()['merged'] == merged
    assert backbone.unmerge_adapters() == merged[::-1]
    assert all(torch.equal(v, weights[k]) for k, v in backbone.model.state_dict().items())
    assert torch.equal(run(backbone, x), expected) and 'merged' not in backbone.meta()


def test_merge_refusals_name_the_problem():
    backbone = perturbed('vit', ['MoPPA', 'LoRA', 'RLRR'])
    with pytest.raises(TypeError, match='MoPPA cannot be merged'):
        backbone.merge_adapters(['MoPPA'])
    with pytest.raises(ValueError, match='RLRR scales the frozen weight'):
        backbone.merge_adapters(['lora'])
    assert backbone.merged_adapters == []
    after_norm = perturbed('vit', ['MoPPA', dict(type='SSF', norm1=True)])
    with pytest.raises(ValueError, match='MoPPA acts on the same output before SSF'):
        after_norm.merge_adapters()


def test_safe_merge_refuses_non_finite_weights_and_writes_nothing():
    backbone = perturbed('vit', 'LoRA')
    weights = frozen_copy(backbone)
    with torch.no_grad():
        backbone.adapters['lora'].updates['1']['qkv'].lora_b[0, 0] = float('nan')
    with pytest.raises(ValueError, match='NaNs or infs'):
        backbone.merge_adapters(safe_merge=True)
    assert backbone.merged_adapters == []
    assert all(torch.equal(v, weights[k]) for k, v in backbone.model.state_dict().items())


def test_merged_checkpoints_are_recorded_and_refused():
    backbone = perturbed('vit', 'LoRA')
    backbone.merge_adapters()
    state = copy.deepcopy(backbone.state_dict())
    with pytest.raises(RuntimeError, match='unmerge_adapters'):
        backbone.load_state_dict(state)  # loading into a merged backbone
    fresh = build('vit', 'LoRA')
    with pytest.raises(BackboneCheckpointMismatch, match='merged into its frozen weights'):
        fresh.load_state_dict(state)
    backbone.unmerge_adapters()
    fresh.load_state_dict(backbone.state_dict())


def test_unmerge_without_a_copy_or_out_of_order_is_refused():
    backbone = perturbed('vit', 'LoRA')
    backbone.merge_adapters(keep_original=False)
    with pytest.raises(RuntimeError, match='keep_original=False'):
        backbone.unmerge_adapters()
    both = perturbed('vit', [dict(type='LoRA', targets=ALL_ROLES), 'RLRR'])
    both.merge_adapters()
    with pytest.raises(RuntimeError, match='merged after it first'):
        both.adapters['rlrr'].unmerge()  # LoRA was merged into the same weights after it


# ------------------------------------------------------------------ ONNX
@pytest.mark.parametrize('kind', ['vit', 'swin'])
@pytest.mark.parametrize('adapter', ADAPTERS + ('merged',))
def test_onnx_export_matches_onnxruntime(kind, adapter, tmp_path):
    pytest.importorskip('onnxruntime')
    from tools.deployment.export_backbone_onnx import check_parity, export_onnx
    spec = ['LoRA', 'RLRR', 'SSF'] if adapter == 'merged' else adapter
    backbone = perturbed(kind, spec)
    if adapter == 'merged':
        backbone.merge_adapters()
    shape = IMAGES[kind][2:]
    export_onnx(backbone, shape, tmp_path / 'backbone.onnx', batch=1)
    errors, _ = check_parity(backbone, tmp_path / 'backbone.onnx', shape, batch=2)  # dynamic
    assert len(errors) == len(backbone.out_channels) and max(errors) < 1e-4, errors


def test_export_tool_loads_an_adapter_only_checkpoint(tmp_path, capsys):
    from tools.deployment.export_backbone_onnx import main
    trained = perturbed('vit', 'MoPPAPaper')
    torch.save(trained.model.state_dict(), tmp_path / 'pretrained.pth')  # the frozen weights
    config = tmp_path / 'backbone.py'
    config.write_text(f'model = dict(backbone=dict(type="MoPPAViT", feature_stride=16, '
                      f'adapter="MoPPAPaper", checkpoint="{tmp_path / "pretrained.pth"}", '
                      f'**{TINY_VIT!r}))\n')
    state = {f'backbone.{k}': v for k, v in trained.state_dict().items()
             if not k.startswith('model.')}  # adapter-only, as TrainableCheckpointHook
    torch.save(dict(state_dict=state), tmp_path / 'adapters.pth')
    args = [str(config), str(tmp_path / 'adapters.pth'), '--shape', '64', '96',
            '--out', str(tmp_path / 'b.onnx')]
    assert main(args) == 0
    assert 'OK: max abs difference' in capsys.readouterr().out
    assert main(args + ['--tolerance', '0', '--rtol', '0']) == 1  # the check can fail


def test_export_tool_exports_the_detector_features(tmp_path):
    from tools.deployment.export_backbone_onnx import main
    options = ['model.backbone.checkpoint=None', 'model.backbone.model_kwargs.depth=2',
               'model.backbone.adapter_blocks=[0,1]']  # bf16 autocast is turned off by the tool
    config = REPO_ROOT / 'configs/demo/mask_rcnn_vits14_moppa_toy.py'
    assert main([str(config), 'none', '--shape', '64', '96', '--features',
                 '--out', str(tmp_path / 'features.onnx'), '--cfg-options', *options]) == 0


# ------------------------------------------------------------------ torch.compile
def test_compile_has_no_graph_break_in_the_adapters():
    backbone = perturbed('vit', ['MoPPA', 'MoPPAPaper', 'LoRA', 'AdaptFormer', 'SSF', 'RLRR'])
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(backbone)(images('vit'))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_inference_benchmark_runs_every_mode():
    from tools.analysis import benchmark_inference
    rows = benchmark_inference.main(['--model', 'vit_tiny_patch16_224', '--depth', '1',
                                     '--size', '64', '64', '--repeats', '1', '--warmup', '0',
                                     '--adapters', 'MoPPAPaper', 'RLRR'])
    assert [row[:2] for row in rows] == [('plain', 'eager'), ('MoPPAPaper', 'eager'),
                                        ('MoPPAPaper', 'inference'), ('RLRR', 'eager'),
                                        ('RLRR', 'merged')]
    from moppa_det.ops.threads import inference_threads
    rows = benchmark_inference.main(['--model', 'vit_tiny_patch16_224', '--depth', '1',
                                     '--size', '64', '64', '--repeats', '1', '--warmup', '0',
                                     '--adapters', 'MoPPA', '--cpu-time',
                                     '--inference-threads', 'none'])
    assert [row[:2] for row in rows] == [('plain', 'eager'), ('MoPPA', 'eager'),
                                        ('MoPPA', 'inference')]
    assert inference_threads() == 1  # the process-wide default is restored


def test_channels_last_dct_equals_the_per_channel_dct():
    from moppa_det.ops.dct import dct2, dct2_channels_last, idct2_channels_last
    x = torch.randn(2, 5, 7, 3, dtype=torch.float64)
    spectrum = dct2_channels_last(x)
    torch.testing.assert_close(spectrum, dct2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    torch.testing.assert_close(idct2_channels_last(spectrum), x)
    assert not torch.allclose(spectrum, x)
