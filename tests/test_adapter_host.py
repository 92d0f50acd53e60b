"""The adapter host: adapter configs, full fine-tuning, records, checkpoint identity."""
import pytest
import torch
from conftest import TINY_SWIN, TINY_VIT

from moppa_det.models.backbones import BackboneCheckpointMismatch, MoPPASwin, MoPPAViT
from moppa_det.models.backbones.meta import decode_meta, encode_meta


def make_vit(**overrides):
    return MoPPAViT(**{**TINY_VIT, 'feature_stride': 16, **overrides})


def make_swin(**overrides):
    return MoPPASwin(**{**TINY_SWIN, **overrides})


def perturb(backbone):
    with torch.no_grad():
        for unit in backbone.adapters['moppa'].units.values():
            unit.up.weight.normal_(std=0.5)
            unit.router.proj.weight.normal_(std=0.5)


def adapter_only(backbone):
    return {k: v for k, v in backbone.state_dict().items() if not k.startswith('model.')}


@pytest.mark.parametrize('adapter', ['MoPPA', dict(type='MoPPA'), [dict(type='MoPPA')], ['MoPPA']])
def test_adapter_config_forms(adapter):
    backbone = make_vit(adapter=adapter)
    assert list(backbone.adapters) == ['moppa']
    assert list(backbone.adapters['moppa'].units) == ['0', '1']


def test_moppa_shorthand_equals_adapter_dict():
    short, full = make_vit(moppa=dict(bottleneck=4)), make_vit(adapter=dict(type='MoPPA',
                                                                            bottleneck=4))
    assert short.meta()['adapters'] == full.meta()['adapters']
    assert short.meta()['adapters'][0]['options']['bottleneck'] == 4


def test_bad_adapter_configs_are_named():
    with pytest.raises(ValueError, match="unknown adapter type 'MoPA'.*Did you mean 'MoPPA'"):
        make_vit(adapter=dict(type='MoPA'))
    with pytest.raises(ValueError, match='not both'):
        make_vit(adapter=dict(type='MoPPA'), moppa=dict(bottleneck=4))
    with pytest.raises(ValueError, match='MoPPA is given twice'):
        make_vit(adapter=['MoPPA', 'MoPPA'])
    with pytest.raises(ValueError, match='"type" key'):
        make_vit(adapter=[dict(bottleneck=4)])
    with pytest.raises(ValueError, match="block 7 does not exist.*2 blocks"):
        make_vit(adapter=dict(type='MoPPA', blocks=[7]))
    with pytest.raises(ValueError, match='bottleneck=0'):
        make_vit(adapter=dict(type='MoPPA', bottleneck=0))
    with pytest.raises(ValueError, match='adapter_blocks or its former name'):
        make_vit(adapter_blocks=[0], unit_blocks=[1])


def test_frozen_backbone_has_no_trainable_parameter():
    backbone = make_vit(adapter=None)
    assert len(backbone.adapters) == 0
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_full_fine_tuning_trains_every_used_weight(factory):
    backbone = factory(adapter=None, frozen=False).train()
    x = torch.randn(2, 3, 64, 80)
    sum(o.square().mean() for o in backbone(x)).backward()
    trainable = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
    assert len(trainable) > 10
    for name, param in trainable:  # DDP with find_unused_parameters=False needs every one
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert backbone.train().model.patch_embed.proj.weight.requires_grad  # train() keeps it
    assert decode_meta(backbone.state_dict()['_extra_state'])['frozen'] is False


def test_records_are_cleared_every_forward():
    backbone = make_swin(adapter_blocks=[0, 2])
    moppa = backbone.adapters['moppa']
    backbone(torch.randn(1, 3, 64, 64))
    assert set(moppa.records) == {'0', '2'}
    backbone.adapters['moppa'].records['stale'] = None
    backbone(torch.randn(1, 3, 64, 64))
    assert set(moppa.records) == {'0', '2'}


@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_checkpointing_recomputation_leaves_the_route_loss_unchanged(factory):
    plain, checkpointed = factory(), factory(with_cp=True)
    perturb(plain)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    terms = []
    for backbone in (plain, checkpointed):
        backbone.train()
        out = backbone(x)
        loss = backbone.auxiliary_losses()['loss_route']
        (loss + sum(o.sum() for o in out)).backward()  # recomputes the blocks under with_cp
        terms.append((loss.detach(), backbone.auxiliary_losses()['loss_route'].detach()))
    torch.testing.assert_close(terms[0][0], terms[1][0])
    torch.testing.assert_close(terms[1][0], terms[1][1])  # still one record per block
    assert terms[0][0] > 0


def test_checkpoint_with_other_adapter_options_is_refused():
    sample = make_vit(adapter=dict(type='MoPPA', router='sample'))
    token = make_vit(adapter=dict(type='MoPPA', router='token'))
    with pytest.raises(BackboneCheckpointMismatch,
                       match="MoPPA option 'router' is 'sample' in the checkpoint, 'token'"):
        token.load_state_dict(sample.state_dict())


def test_checkpoint_with_other_blocks_or_adapters_is_refused():
    source = make_vit(adapter_blocks=[1])
    with pytest.raises(BackboneCheckpointMismatch, match=r'sits in blocks \[1\] in the checkpoint,'
                                                         r' \[0, 1\] in the config'):
        make_vit().load_state_dict(source.state_dict(), strict=False)
    with pytest.raises(BackboneCheckpointMismatch, match=r"adapters \['MoPPA'\], the config "
                                                         r"builds none"):
        make_vit(adapter=None).load_state_dict(source.state_dict(), strict=False)


def test_route_loss_weight_is_not_part_of_the_identity():
    source = make_vit(adapter=dict(type='MoPPA', route_reg=dict(weight=0.5)))
    perturb(source)
    target = make_vit(adapter=dict(type='MoPPA', route_reg=dict(weight=0.01)))
    target.load_state_dict(source.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(target(x)[0], source(x)[0])


def test_meta_cast_to_another_dtype_is_an_error():
    backbone = make_vit()
    state = backbone.state_dict()
    state['_extra_state'] = state['_extra_state'].half()
    with pytest.raises(BackboneCheckpointMismatch, match=r'_extra_state holds a torch.float16'):
        make_vit().load_state_dict(state)


def test_first_release_checkpoint_still_loads():
    """Version-1 state dicts: units under 'units.', meta with 'moppa' and no 'adapters'."""
    trained = make_vit()
    perturb(trained)
    state = {}
    for key, value in adapter_only(trained).items():
        state[key.replace('adapters.moppa.units.', 'units.')] = value
    meta = decode_meta(state['_extra_state'])
    options = meta['adapters'][0]['options']
    options.pop('route_reg')
    state['_extra_state'] = encode_meta(dict(version=1, model_name=meta['model_name'],
                                             weights_sha256=meta['weights_sha256'],
                                             moppa=options))
    restored = make_vit()
    restored.model.load_state_dict(trained.model.state_dict())
    restored._weights_sha256 = None
    restored.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(restored(x)[0], trained(x)[0])
