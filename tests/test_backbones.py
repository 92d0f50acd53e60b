"""The adapter hosts on timm ViT and Swin, with MoPPA (the default adapter), on tiny CPU models."""
import copy

import pytest
import timm
import torch
from conftest import TINY_PLAIN_VIT, TINY_SWIN, TINY_VIT

from moppa_det.models.backbones import (
    BackboneBuildError,
    BackboneCheckpointMismatch,
    MoPPASwin,
    MoPPAViT,
)
from moppa_det.models.backbones.meta import decode_meta, encode_meta


def make_vit(**overrides):
    return MoPPAViT(**{**TINY_VIT, 'feature_stride': 16, **overrides})


def make_swin(**overrides):
    return MoPPASwin(**{**TINY_SWIN, **overrides})


def plain_timm_copy(backbone, spec, **kwargs):
    """The same timm model with the same weights, without units or hooks."""
    model = timm.create_model(spec['model_name'], num_classes=0, img_size=spec['img_size'],
                              **spec['model_kwargs'], **kwargs)
    model.load_state_dict(backbone.model.state_dict())
    return model.eval()  # timm's default drop_path_rate may differ from the backbone's


def units(backbone):
    """The MoPPA units of a backbone, keyed by block."""
    return backbone.adapters['moppa'].units


def perturb_units(backbone):
    with torch.no_grad():
        for unit in units(backbone).values():
            unit.up.weight.normal_(std=0.5)
            unit.router.proj.weight.normal_(std=0.5)


@pytest.mark.parametrize('factory, shapes', [
    (make_vit, [(1, 32, 7, 9)]),
    (lambda: MoPPAViT(**TINY_PLAIN_VIT, out_indices=(0, 1)), [(1, 32, 7, 9)] * 2),
    (make_swin, [(1, 16, 28, 35), (1, 32, 14, 18), (1, 64, 7, 9), (1, 128, 4, 5)]),
])
def test_odd_input_gives_declared_shapes(factory, shapes):
    backbone = factory()
    outputs = backbone(torch.randn(1, 3, 112, 137))
    assert [tuple(o.shape) for o in outputs] == shapes
    assert backbone.out_channels == [s[1] for s in shapes]
    for stride, output in zip(backbone.out_strides, outputs):
        assert output.shape[-2:] == (-(-112 // stride), -(-137 // stride))


@pytest.mark.parametrize('placement', ['after_norm', 'before_norm'])
def test_vit_at_init_equals_plain_timm(placement):
    backbone = MoPPAViT(**TINY_VIT, out_indices=(0, 1), moppa=dict(placement=placement))
    x = torch.randn(2, 3, 112, 140)  # multiple of the patch: no padding
    plain = plain_timm_copy(backbone, TINY_VIT, dynamic_img_size=True)
    expected = plain.forward_intermediates(x, indices=[0, 1], norm=True, intermediates_only=True)
    for ours, theirs in zip(backbone.eval()(x), expected):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_swin_at_init_equals_plain_timm():
    backbone = make_swin()
    x = torch.randn(1, 3, 128, 160)
    plain = plain_timm_copy(backbone, TINY_SWIN, **MoPPASwin.timm_kwargs)
    expected = plain.forward_intermediates(x, indices=4, intermediates_only=True)
    for ours, theirs in zip(backbone.eval()(x), expected):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_units_change_the_output_once_trained():
    backbone = make_vit()
    x = torch.randn(1, 3, 64, 64)
    before = backbone(x)[0]
    perturb_units(backbone)
    assert not torch.allclose(backbone(x)[0], before)


@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_frozen_when_built_and_after_train(factory):
    backbone = factory()
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert all(p.requires_grad for p in units(backbone).parameters())
    assert len(units(backbone)) == len(backbone.sites())
    backbone.train()
    backbone.model.requires_grad_(True)  # e.g. a careless hook
    backbone.train()
    assert not any(p.requires_grad for p in backbone.model.parameters())


@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_only_units_change_and_all_get_gradients(factory):
    backbone = factory()
    frozen_before = copy.deepcopy(backbone.model.state_dict())
    units_before = copy.deepcopy(units(backbone).state_dict())
    optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(2, 3, 64, 80)
    for _ in range(3):
        optimizer.zero_grad()
        sum(o.square().mean() for o in backbone(x)).backward()
        optimizer.step()
    for name, param in backbone.named_parameters():
        if param.requires_grad:  # DDP with find_unused_parameters=False needs every one used
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, frozen_before[key]), key
    changed = [k for k, v in units(backbone).state_dict().items()
               if not torch.equal(v, units_before[k])]
    assert changed and all(k.split('.')[1] in ('down', 'up', 'router', 'priors') for k in changed)


@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_non_reentrant_checkpointing_gives_units_the_same_gradients(factory):
    plain, checkpointed = factory(), factory(with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    perturb_units(plain)
    perturb_units(checkpointed)
    units(checkpointed).load_state_dict(units(plain).state_dict())
    x = torch.randn(1, 3, 64, 64)
    for backbone in (plain, checkpointed):
        backbone.train()
        sum(o.sum() for o in backbone(x)).backward()
    for (name, a), b in zip(units(plain).named_parameters(), units(checkpointed).parameters()):
        assert b.grad is not None and b.grad.abs().sum() > 0, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_init_weights_touches_nothing():
    backbone = make_vit()
    state = copy.deepcopy(backbone.state_dict())
    backbone.init_weights()
    for key, value in backbone.state_dict().items():
        if key != '_extra_state':
            assert torch.equal(value, state[key]), key


def test_plain_backbone_without_units():
    backbone = make_vit(moppa=None)
    assert len(backbone.adapters) == 0 and backbone.auxiliary_losses() == {}
    assert not any(p.requires_grad for p in backbone.parameters())


def test_unit_blocks_selects_blocks_and_validates():
    assert list(units(make_vit(unit_blocks=[1]))) == ['1']
    assert list(units(make_vit(adapter_blocks=[0]))) == ['0']
    assert list(units(make_vit(adapter=dict(type='MoPPA', blocks=[1])))) == ['1']
    with pytest.raises(ValueError, match='block 5 does not exist'):
        make_vit(unit_blocks=[5])


def test_deepcopy_hooks_use_the_copys_units():
    backbone = make_vit()
    clone = copy.deepcopy(backbone)
    perturb_units(clone)
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(clone(x)[0], backbone(x)[0])


def test_route_statistics_per_unit():
    backbone = make_swin()
    backbone(torch.randn(1, 3, 64, 64))
    stats = backbone.adapters['moppa'].route_statistics()
    assert len(stats) == 5
    for value in stats.values():
        torch.testing.assert_close(value['mean_alpha'].sum(), torch.tensor(1.0))


def test_bad_inputs_are_explained():
    with pytest.raises(BackboneBuildError, match="unknown timm model name 'vit_smal_patch14_dinov2'"
                                                 ".*vit_small_patch14_dinov2"):
        MoPPAViT(model_name='vit_smal_patch14_dinov2')
    with pytest.raises(BackboneBuildError, match='is a SwinTransformer'):
        MoPPAViT(**TINY_SWIN)
    with pytest.raises(FileNotFoundError, match='no_such.safetensors'):
        make_vit(checkpoint='/nonexistent/no_such.safetensors')
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\)'):
        make_vit()(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 16 pixels'):
        make_vit()(torch.randn(1, 3, 8, 64))
    with pytest.raises(ValueError, match=r"adapter\['MoPPA'\].*unknown key 'bottelneck'"):
        make_vit(moppa=dict(bottelneck=4))
    with pytest.raises(ValueError, match=r"adapter\['MoPPA'\].*router='tokens'"):
        make_vit(moppa=dict(router='tokens'))
    with pytest.raises(BackboneBuildError, match="no pretrained tag 'mea'"):
        MoPPAViT(model_name='vit_base_patch16_224.mea')
    with pytest.raises(ValueError, match='out_indices .* out of range for 2 blocks'):
        make_vit(out_indices=(5,))
    with pytest.raises(ValueError, match='distinct blocks in ascending order'):
        make_vit(out_indices=(-1, 1))
    with pytest.raises(ValueError, match='distinct stages in ascending order'):
        make_swin(out_indices=(3, 0))


def test_checkpoint_file_loads_through_timm_filter(tmp_path):
    source = make_vit(moppa=None)
    path = tmp_path / 'vit.pth'
    torch.save(source.model.state_dict(), path)
    # Built for another nominal size: timm's filter resamples the position embedding.
    loaded = MoPPAViT(**{**TINY_VIT, 'img_size': 112}, checkpoint=str(path), moppa=None)
    torch.testing.assert_close(loaded.model.blocks[0].attn.qkv.weight,
                               source.model.blocks[0].attn.qkv.weight)
    assert loaded.model.pos_embed.shape[1] == 8 * 8


def test_checkpoint_that_does_not_fit_is_explained(tmp_path):
    other = MoPPAViT(**{**TINY_VIT, 'model_kwargs': dict(depth=3, embed_dim=32, num_heads=2)},
                     moppa=None)
    path = tmp_path / 'deeper.pth'
    torch.save(other.model.state_dict(), path)
    with pytest.raises(BackboneBuildError, match=r'deeper.pth.*does not fit.*blocks\.2'):
        make_vit(checkpoint=str(path))


def trainable_only(state_dict):
    return {k: v for k, v in state_dict.items() if not k.startswith('model.')}


def test_adapter_only_state_dict_round_trip(tmp_path):
    weights = tmp_path / 'vit.pth'
    torch.save(make_vit(moppa=None).model.state_dict(), weights)
    trained = make_vit(checkpoint=str(weights))
    perturb_units(trained)
    restored = make_vit(checkpoint=str(weights))
    restored.load_state_dict(trainable_only(trained.state_dict()), strict=True)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(restored(x)[0], trained(x)[0])


def test_adapter_only_state_dict_for_other_weights_is_refused():
    trained, other = make_vit(), make_vit()  # two random initialisations
    with pytest.raises(BackboneCheckpointMismatch, match='sha256'):
        other.load_state_dict(trainable_only(trained.state_dict()))
    swapped = trainable_only(trained.state_dict())
    swapped['_extra_state'] = encode_meta({**decode_meta(swapped['_extra_state']),
                                           'model_name': 'vit_large_patch14_dinov2'})
    with pytest.raises(BackboneCheckpointMismatch, match="made for backbone 'vit_large"):
        trained.load_state_dict(swapped)


@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_bfloat16_autocast_backbone(factory):
    reference = factory()
    perturb_units(reference)
    fast = factory(autocast_dtype='bfloat16')
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 96)
    for ours, theirs in zip(fast(x), reference(x)):
        assert ours.dtype == torch.float32
        assert (ours - theirs).norm() < 0.05 * theirs.norm()
    sum(o.sum() for o in fast(x)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in units(fast).parameters())
    with pytest.raises(ValueError, match="autocast_dtype='fp8'"):
        factory(autocast_dtype='fp8')


def test_state_dict_holds_only_tensors():
    """MMEngine broadcasts the state dict under DDP: it accepts tensors only."""
    backbone = make_vit()
    state = backbone.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    meta = decode_meta(state['_extra_state'])
    assert meta['model_name'] == TINY_VIT['model_name'] and len(meta['weights_sha256']) == 64


def test_swin_shifts_windows_in_every_stage():
    backbone = make_swin()  # nominal img_size 64: stage maps smaller than the window
    for stage in backbone.model.layers:
        shifts = [tuple(block.shift_size) for block in stage.blocks]
        assert all(tuple(block.window_size) == (7, 7) for block in stage.blocks)
        assert all(s != (0, 0) for s in shifts[1::2]), shifts


def test_full_checkpoint_with_other_weights_updates_the_identity(tmp_path):
    trained, other = make_vit(), make_vit()  # different random frozen weights
    assert other.weights_sha256  # cached before loading, as the runner does
    other.load_state_dict(trained.state_dict())  # full: brings trained's frozen weights
    assert other.weights_sha256 == trained.weights_sha256
    fresh = make_vit()
    with pytest.raises(BackboneCheckpointMismatch):
        fresh.load_state_dict(trainable_only(other.state_dict()))


def test_auto_autocast_uses_bfloat16_only_where_native(monkeypatch):
    from moppa_det.models.backbones import autocast

    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(autocast, 'cpu_has_native_bf16', lambda native=native: native)
        assert autocast.resolve_autocast_dtype('auto', 'cpu') == expected
    assert autocast.resolve_autocast_dtype('float16', 'cpu') == torch.float16
    assert autocast.resolve_autocast_dtype(None, 'cuda') is None
    monkeypatch.setattr(autocast, 'cpu_has_native_bf16', lambda: False)
    backbone = make_vit(autocast_dtype='auto')
    x = torch.randn(1, 3, 64, 64)
    reference = make_vit()
    reference.load_state_dict(backbone.state_dict())
    torch.testing.assert_close(backbone(x)[0], reference(x)[0], rtol=0, atol=0)
