"""The LoRA, AdaptFormer, SSF and RLRR adapters on tiny timm ViT and Swin hosts."""
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_PLAIN_VIT, TINY_SWIN, TINY_VIT

from moppa_det.models.backbones import MoPPASwin, MoPPAViT

KINDS = ('vit', 'swin')
IMAGES = {'vit': (2, 3, 64, 80), 'plain_vit': (2, 3, 64, 80), 'swin': (2, 3, 64, 64)}
ALL_ROLES = ('qkv', 'proj', 'fc1', 'fc2')


def build(kind, adapter, **kwargs):
    if kind == 'vit':
        return MoPPAViT(**TINY_VIT, feature_stride=16, adapter=adapter, **kwargs)
    if kind == 'plain_vit':
        return MoPPAViT(**TINY_PLAIN_VIT, adapter=adapter, **kwargs)
    return MoPPASwin(**TINY_SWIN, adapter=adapter, **kwargs)


def pair(kind, adapter, **kwargs):
    """(adapted backbone, the same backbone without adapters), with the same frozen weights."""
    adapted = build(kind, adapter, **kwargs)
    plain = build(kind, None, **kwargs)
    plain.model.load_state_dict(adapted.model.state_dict())
    return adapted, plain


def images(kind):
    return torch.randn(*IMAGES[kind], generator=torch.Generator().manual_seed(1))


def outputs_equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def adapter_parameters(backbone):
    return list(backbone.adapters.named_parameters())


def perturb(backbone, std=0.1):
    """Moves every adapter parameter away from its init (zero-init paths become non-zero)."""
    with torch.no_grad():
        for _, param in adapter_parameters(backbone):
            param.add_(torch.randn_like(param) * std)


def widths(backbone):
    return [site.width for site in backbone.sites()]


# ---------------------------------------------------------------- identity at init
IDENTITY_SPECS = [
    dict(type='LoRA'),
    dict(type='LoRA', rank=2, alpha=4.0, targets=list(ALL_ROLES)),
    dict(type='AdaptFormer', bottleneck=4),
    dict(type='AdaptFormer', bottleneck=4, learnable_scale=True),
    dict(type='SSF', init='identity'),
    dict(type='SSF', init='identity', norm1=True),
    dict(type='RLRR', init='identity'),
    dict(type='RLRR', init='identity', qkv_rows='all'),
]


@pytest.mark.parametrize('kind', ['vit', 'plain_vit', 'swin'])
@pytest.mark.parametrize('spec', IDENTITY_SPECS, ids=lambda s: '-'.join(map(str, s.values())))
def test_identity_at_init(kind, spec):
    adapted, plain = pair(kind, spec)
    x = images(kind)
    assert outputs_equal(adapted(x), plain(x))
    perturb(adapted)  # and the comparison can fail
    assert not outputs_equal(adapted(x), plain(x))


@pytest.mark.parametrize('kind', KINDS)
def test_ssf_default_init_is_the_authors_and_not_an_identity(kind):
    adapted, plain = pair(kind, dict(type='SSF'))
    scales = torch.cat([p for n, p in adapter_parameters(adapted) if n.endswith('scale')])
    shifts = torch.cat([p for n, p in adapter_parameters(adapted) if n.endswith('shift')])
    assert abs(scales.mean().item() - 1) < 0.01 and 0.01 < scales.std().item() < 0.03
    assert abs(shifts.mean().item()) < 0.01 and 0.01 < shifts.std().item() < 0.03
    x = images(kind)
    for new, old in zip(adapted(x), plain(x)):
        change = (new - old).norm() / old.norm()
        assert 0 < change < 0.5  # a small perturbation of the pre-trained features


def test_rlrr_default_init_is_the_authors_and_not_an_identity():
    adapted, plain = pair('vit', dict(type='RLRR'))
    d = widths(adapted)[0]
    for layers in adapted.adapters['rlrr'].updates.values():
        for role, update in layers.items():
            fan_in = 4 * d if role == 'fc2' else d
            assert update.scale_in.abs().max() <= (6 / fan_in) ** 0.5
            assert update.scale_in.abs().max() > 0.5 * (6 / fan_in) ** 0.5
            assert update.scale_out.abs().max() <= 6 ** 0.5
            assert update.scale_out.abs().max() > 0.5 * 6 ** 0.5
            assert torch.equal(update.bias_shift, torch.zeros_like(update.bias_shift))
    x = images('vit')
    assert not outputs_equal(adapted(x), plain(x))


# ---------------------------------------------------------------- the maths at each site
def test_lora_adds_the_scaled_low_rank_update_to_the_layer():
    backbone = build('vit', dict(type='LoRA', rank=2, alpha=6.0, targets=['qkv', 'fc2']))
    perturb(backbone)
    for role in ('qkv', 'fc2'):
        layer = backbone.sites()[1].linear(role)
        update = backbone.adapters['lora'].updates['1'][role]
        x = torch.randn(3, 5, layer.in_features)
        expected = F.linear(x, layer.weight, layer.bias) + 3.0 * (
            x @ update.lora_a.T @ update.lora_b.T)
        torch.testing.assert_close(layer(x), expected)


def effective_linear(layer):
    """(W', b') of a hooked linear layer, probed: the adapted layer is affine in its input."""
    with torch.no_grad():
        bias = layer(torch.zeros(1, layer.in_features))[0]
        weight = (layer(torch.eye(layer.in_features)) - bias).T
    return weight, bias


MERGE_SPECS = [dict(type='LoRA', rank=2, targets=list(ALL_ROLES)),
               dict(type='RLRR'),
               [dict(type='LoRA', rank=2, targets=['qkv', 'fc1']), dict(type='RLRR')]]


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('spec', MERGE_SPECS, ids=str)
def test_weight_adapters_equal_their_merged_weights(kind, spec):
    """Outputs and input gradients equal those of the plain model with W', b' merged in."""
    adapted, merged = pair(kind, spec)
    perturb(adapted)
    with torch.no_grad():
        for site, merged_site in zip(adapted.sites(), merged.sites()):
            for role in ALL_ROLES:
                weight, bias = effective_linear(site.linear(role))
                merged_site.linear(role).weight.copy_(weight)
                merged_site.linear(role).bias.copy_(bias)
    (out, grad), (merged_out, merged_grad) = [outputs_and_input_grad(b, kind)
                                              for b in (adapted, merged)]
    torch.testing.assert_close(out, merged_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, merged_grad, rtol=1e-4, atol=1e-5)


def outputs_and_input_grad(backbone, kind):
    x = images(kind).requires_grad_()
    outputs = backbone(x)
    grad, = torch.autograd.grad(sum(o.square().sum() for o in outputs), x)
    return torch.cat([o.flatten() for o in outputs]), grad


def test_lora_alpha_defaults_to_the_rank():
    backbone = build('vit', dict(type='LoRA', rank=4))
    assert backbone.adapters['lora'].updates['0']['qkv'].scaling == 1.0


@pytest.mark.parametrize('qkv_rows', ['value', 'all'])
def test_rlrr_rescales_the_weight_rows(qkv_rows):
    backbone = build('vit', dict(type='RLRR', qkv_rows=qkv_rows))
    perturb(backbone)  # non-zero bias shifts
    for role in ALL_ROLES:
        layer = backbone.sites()[0].linear(role)
        update = backbone.adapters['rlrr'].updates['0'][role]
        first = 2 * layer.out_features // 3 if (role, qkv_rows) == ('qkv', 'value') else 0
        factor = torch.ones_like(layer.weight)
        factor[first:] += torch.outer(update.scale_out, update.scale_in)
        bias = layer.bias.clone()
        bias[first:] += update.bias_shift
        for tokens in (1, 200):  # both ways of computing the update
            x = torch.randn(2, tokens, layer.in_features)
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight * factor, bias))


def test_adaptformer_is_parallel_to_the_mlp_branch():
    """Block output = plain block output + s * bottleneck(residual stream after attention)."""
    adapted, plain = pair('vit', dict(type='AdaptFormer', bottleneck=4, scale=0.5))
    perturb(adapted)
    block, plain_block = adapted.model.blocks[0], plain.model.blocks[0]
    x = torch.randn(2, 9, widths(adapted)[0])
    stream = x + plain_block.ls1(plain_block.attn(plain_block.norm1(x)))
    expected = plain_block(x) + adapted.adapters['adaptformer'].bottlenecks['0'](stream)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize('kind', KINDS)
def test_ssf_sites_are_switched_off_and_on(kind):
    options = dict(patch_embed=False, final_norm=False, norm1=True, norm2=False)
    backbone = build(kind, dict(type='SSF', **options))
    ssf = backbone.adapters['ssf']
    assert ssf.patch_embed is None and ssf.final_norm is None
    assert all(set(norms) == {'norm1'} for norms in ssf.blocks.values())
    with pytest.raises(ValueError, match='no site'):
        build(kind, dict(type='SSF', **dict(options, norm1=False)))


@pytest.mark.parametrize('patch_embed', [True, False])
def test_ssf_patch_embed_site_makes_the_backward_reach_every_block(patch_embed):
    backbone = build('vit', dict(type='SSF', patch_embed=patch_embed, final_norm=False),
                     adapter_blocks=[1])
    first_block_grad = []
    backbone.model.blocks[0].register_forward_hook(
        lambda module, args, output: first_block_grad.append(output.requires_grad))
    backbone(images('vit'))
    assert first_block_grad == [patch_embed]


# ---------------------------------------------------------------- parameter counts
def lora_count(d, rank, roles):
    shapes = {'qkv': (d, 3 * d), 'proj': (d, d), 'fc1': (d, 4 * d), 'fc2': (4 * d, d)}
    return sum(rank * (shapes[r][0] + shapes[r][1]) for r in roles)


def rlrr_count(d, roles, qkv_rows):
    per_role = {'qkv': d + 2 * (d if qkv_rows == 'value' else 3 * d), 'proj': 3 * d,
                'fc1': d + 2 * 4 * d, 'fc2': 4 * d + 2 * d}
    return sum(per_role[r] for r in roles)


COUNT_CASES = [
    (dict(type='LoRA'), lambda d: lora_count(d, 8, ['qkv'])),
    (dict(type='LoRA', rank=3, targets=['proj', 'fc1', 'fc2']),
     lambda d: lora_count(d, 3, ['proj', 'fc1', 'fc2'])),
    (dict(type='AdaptFormer', bottleneck=5), lambda d: 2 * d * 5 + 5 + d),
    (dict(type='AdaptFormer', bottleneck=5, learnable_scale=True),
     lambda d: 2 * d * 5 + 5 + d + 1),
    (dict(type='RLRR'), lambda d: rlrr_count(d, ALL_ROLES, 'value')),
    (dict(type='RLRR', targets='fc1', qkv_rows='all'), lambda d: rlrr_count(d, ['fc1'], 'all')),
    (dict(type='RLRR', targets=['qkv'], qkv_rows='all'), lambda d: rlrr_count(d, ['qkv'], 'all')),
    (dict(type='SSF', patch_embed=False, final_norm=False), lambda d: 2 * d),
    (dict(type='SSF', patch_embed=False, final_norm=False, norm1=True), lambda d: 4 * d),
]


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('spec, per_block', COUNT_CASES,
                         ids=lambda v: '-'.join(map(str, v.values())) if isinstance(v, dict)
                         else '')
def test_trainable_parameters_follow_the_formulas(kind, spec, per_block):
    backbone = build(kind, spec)
    assert trainable(backbone) == sum(per_block(d) for d in widths(backbone))
    assert trainable(backbone.model) == 0
    assert trainable(backbone) == trainable(backbone.adapters)


@pytest.mark.parametrize('kind, extra', [('vit', lambda w: 2 * w[0] + 2 * w[-1]),
                                         ('swin', lambda w: 2 * w[0])])  # Swin: no final norm
def test_ssf_counts_the_patch_embedding_and_final_norm(kind, extra):
    backbone = build(kind, dict(type='SSF'))
    assert trainable(backbone) == sum(2 * d for d in widths(backbone)) + extra(widths(backbone))


def test_adapter_blocks_limit_the_count():
    backbone = build('swin', dict(type='LoRA', rank=2, blocks=[0, 4]))
    d = widths(backbone)
    assert trainable(backbone) == lora_count(d[0], 2, ['qkv']) + lora_count(d[4], 2, ['qkv'])


# ---------------------------------------------------------------- gradients
GRAD_SPECS = [
    dict(type='LoRA', rank=2, targets=list(ALL_ROLES), dropout=0.1),
    dict(type='AdaptFormer', bottleneck=4, learnable_scale=True, dropout=0.1),
    dict(type='SSF', norm1=True),
    dict(type='RLRR'),
    [dict(type='LoRA', rank=2), dict(type='SSF')],
]


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('spec', GRAD_SPECS, ids=str)
def test_every_adapter_parameter_gets_a_gradient_and_frozen_weights_none(kind, spec):
    adapted, plain = pair(kind, spec)
    perturb(adapted)
    x = images(kind)
    outputs = adapted(x)
    assert not outputs_equal(outputs, plain(x))
    sum(o.square().mean() for o in outputs).backward()
    for name, param in adapter_parameters(adapted):
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in adapted.model.parameters())


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('spec', GRAD_SPECS, ids=str)
def test_checkpointing_gives_the_same_gradients(kind, spec):
    spec = copy.deepcopy(spec)
    for item in spec if isinstance(spec, list) else [spec]:
        item.pop('dropout', None)  # dropout masks are not what this compares
    plain = build(kind, spec)
    checkpointed = build(kind, spec, with_cp=True)
    perturb(plain)
    checkpointed.load_state_dict(plain.state_dict())
    assert any(getattr(m, 'grad_checkpointing', False) for m in checkpointed.model.modules())
    x = images(kind)
    for backbone in (plain, checkpointed):
        sum(o.square().mean() for o in backbone(x)).backward()
    grads = dict(adapter_parameters(checkpointed))
    for name, param in adapter_parameters(plain):
        torch.testing.assert_close(grads[name].grad, param.grad, msg=name)


def test_lora_and_ssf_combine():
    spec = [dict(type='LoRA', rank=2), dict(type='SSF', init='identity')]
    adapted, plain = pair('vit', spec)
    x = images('vit')
    assert outputs_equal(adapted(x), plain(x))
    assert set(adapted.adapters) == {'lora', 'ssf'}
    lora_only = build('vit', dict(type='LoRA', rank=2))
    ssf_only = build('vit', dict(type='SSF'))
    assert trainable(adapted) == trainable(lora_only) + trainable(ssf_only)
    with pytest.raises(ValueError, match='twice'):
        build('vit', [dict(type='LoRA'), dict(type='LoRA', targets='fc1')])


# ---------------------------------------------------------------- options
BAD_OPTIONS = [
    (dict(type='LoRA', rank=0), 'rank'),
    (dict(type='LoRA', rank=2.5), 'rank'),
    (dict(type='LoRA', alpha=0), 'alpha'),
    (dict(type='LoRA', dropout=-0.1), 'dropout'),
    (dict(type='LoRA', dropout=1.0), 'dropout'),
    (dict(type='LoRA', targets=['qkv', 'attn']), 'targets'),
    (dict(type='LoRA', targets=[]), 'targets'),
    (dict(type='LoRA', targets=['fc1', 'fc1']), 'targets'),
    (dict(type='LoRA', ranks=8), "'ranks'.*Did you mean 'rank'"),
    (dict(type='AdaptFormer', bottleneck=0), 'bottleneck'),
    (dict(type='AdaptFormer', dropout=-1), 'dropout'),
    (dict(type='AdaptFormer', learnable_scale='yes'), 'learnable_scale'),
    (dict(type='AdaptFormer', scale='0.1'), 'scale'),
    (dict(type='SSF', init='ones'), 'init'),
    (dict(type='SSF', std=-0.1), 'std'),
    (dict(type='SSF', patch_embed=0), 'patch_embed'),
    (dict(type='RLRR', targets=['value']), 'targets'),
    (dict(type='RLRR', qkv_rows='values'), "qkv_rows.*Did you mean 'value'"),
    (dict(type='RLRR', init='zeros'), 'init'),
]


@pytest.mark.parametrize('spec, message', BAD_OPTIONS, ids=str)
def test_bad_options_name_the_option(spec, message):
    with pytest.raises(ValueError, match=message):
        build('vit', spec)


def test_options_are_recorded_in_the_meta():
    backbone = build('vit', [dict(type='LoRA', targets='fc1'), dict(type='RLRR', targets='qkv')])
    described = {a['type']: a['options'] for a in backbone.meta()['adapters']}
    assert described['LoRA'] == dict(rank=8, alpha=None, dropout=0.0, targets=['fc1'])
    assert described['RLRR'] == dict(targets=['qkv'], qkv_rows='value', init='kaiming')


# ---------------------------------------------------------------- host integration
@pytest.mark.parametrize('spec', IDENTITY_SPECS[::2], ids=str)
def test_reset_parameters_restores_the_init(spec):
    adapted, plain = pair('vit', spec)
    perturb(adapted)
    for adapter in adapted.adapters.values():
        adapter.reset_parameters()
    x = images('vit')
    assert outputs_equal(adapted(x), plain(x))


@pytest.mark.parametrize('spec', GRAD_SPECS[1:4], ids=str)
def test_deepcopy_hooks_use_the_copys_adapters(spec):
    backbone = build('vit', spec)
    backbone.eval()
    duplicate = copy.deepcopy(backbone)
    x = images('vit')
    before = backbone(x)
    perturb(duplicate)
    assert outputs_equal(backbone(x), before)
    assert not outputs_equal(duplicate(x), before)


def test_pretrained_state_dict_names_stay_timm_s():
    adapted = build('vit', [dict(type='LoRA'), dict(type='AdaptFormer'), dict(type='SSF'),
                            dict(type='RLRR')])
    plain = build('vit', None)
    new = set(adapted.state_dict()) - set(plain.state_dict())
    assert new and all(name.startswith('adapters.') for name in new)
    assert 'adapters.lora.updates.0.qkv.lora_a' in new
    assert 'adapters.rlrr.updates.1.fc2.scale_in' in new
    assert 'adapters.ssf.blocks.0.norm2.scale' in new and 'adapters.ssf.patch_embed.shift' in new


@pytest.mark.parametrize('kind', KINDS)
def test_bfloat16_autocast(kind):
    backbone = build(kind, [dict(type='RLRR'), dict(type='SSF'), dict(type='AdaptFormer')],
                     autocast_dtype='bfloat16')
    perturb(backbone)
    outputs = backbone(images(kind))
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    assert all(torch.isfinite(p.grad).all() for _, p in adapter_parameters(backbone))


def test_ssf_and_rlrr_get_no_weight_decay():
    from moppa_det.engine.optim_constructor import TrainableOptimWrapperConstructor
    backbone = build('vit', [dict(type='LoRA'), dict(type='SSF'), dict(type='RLRR')])
    constructor = TrainableOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)))
    groups = constructor(torch.nn.ModuleDict(dict(backbone=backbone))).optimizer.param_groups
    decay = {id(p): group['weight_decay'] for group in groups for p in group['params']}
    for name, param in adapter_parameters(backbone):
        expected = 0.05 if name.startswith('lora.') else 0.0
        assert decay[id(param)] == expected, name
