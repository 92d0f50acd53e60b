"""MoPPAPaper, the authors' formulation (METHOD.md), on tiny CPU ViT and Swin backbones."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SWIN, TINY_VIT

from moppa_det.models.adapters import MoPPAPaper
from moppa_det.models.backbones import BackboneCheckpointMismatch, MoPPASwin, MoPPAViT
from moppa_det.ops.paper_filter import (
    entropy_decay,
    resize_coefficients,
    routing_entropy,
    spectral_filter,
)


def make_vit(**options):
    return MoPPAViT(**TINY_VIT, adapter=dict(type='MoPPAPaper', **options))


def make_swin(**options):
    return MoPPASwin(**TINY_SWIN, adapter=dict(type='MoPPAPaper', **options))


def paper(backbone) -> MoPPAPaper:
    return backbone.adapters['moppa_paper']


def cosine_basis(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix from its textbook formula, in float64: (n, n)."""
    freq = torch.arange(n, dtype=torch.float64)[:, None]
    pos = torch.arange(n, dtype=torch.float64)[None, :]
    scale = torch.full((n, 1), math.sqrt(2 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1 / n)
    return scale * torch.cos(math.pi * freq * (pos + 0.5) / n)


def reference_response(maps, times, weights, priors, h, w):
    """R(n, m, c) by an explicit loop over frequencies and channels, float64: (h, w, C)."""
    heads, head_dim = weights.shape[1], times.shape[1]
    out = torch.zeros(h, w, heads * head_dim, dtype=torch.float64)
    for n in range(h):
        for m in range(w):
            lam = (math.pi * n / h) ** 2 + (math.pi * m / w) ** 2
            for c in range(heads * head_dim):
                head, j = divmod(c, head_dim)
                total = 0.0
                for i, prior in enumerate(priors):
                    a = max(float(maps[i, n, m, head]) * float(times[i, j]), 0.0)
                    gain = {'heat': math.exp(-lam * a), 'wave': math.cos(lam * a),
                            'poisson': a}[prior]
                    total += float(weights[i, head]) * gain
                out[n, m, c] = total
    return out


def test_response_and_filter_match_direct_reference_on_non_square_grid():
    backbone = make_vit(map_size=(5, 7))  # stored at the runtime grid: no resampling involved
    adapter, site = paper(backbone), backbone.sites()[1]
    with torch.no_grad():  # negative K entries exercise the ReLU
        adapter.maps['0'].coefficients.uniform_(-0.5, 3.0)
    params = adapter.blocks['1']
    priors = adapter.options.priors
    expected = reference_response(adapter.maps['0'].coefficients.detach(), params.times.detach(),
                                  params.routing().detach(), priors, 5, 7)
    response = adapter.response(1, (5, 7)).detach().double()
    torch.testing.assert_close(response, expected, rtol=1e-5, atol=1e-6)

    x = torch.randn(2, 5, 7, site.width, dtype=torch.float64)
    c_h, c_w = cosine_basis(5), cosine_basis(7)
    spectrum = torch.einsum('nx,bxyc,my->bnmc', c_h, x, c_w) * expected
    reference = torch.einsum('nx,bnmc,my->bxyc', c_h, spectrum, c_w)
    out = adapter.adapt_map(site, x.float(), None)
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mode', ['bilinear', 'bicubic'])
def test_resized_maps_sample_the_stored_frequencies(mode):
    maps = torch.randn(3, 14, 14, 2)
    assert resize_coefficients(maps, (14, 14), mode) is maps
    double = resize_coefficients(maps, (28, 42), mode)  # frequency n/14 sits at 2n and 3n
    torch.testing.assert_close(double[:, ::2, ::3], maps, rtol=0, atol=1e-6)
    odd = resize_coefficients(maps, (9, 23), mode)
    torch.testing.assert_close(odd[:, 0, 0], maps[:, 0, 0], rtol=0, atol=1e-6)  # DC to DC
    if mode == 'bilinear':  # halfway between stored frequencies n/14 and (n+1)/14
        halfway = resize_coefficients(maps, (28, 14), mode)[:, 1:-1:2]
        torch.testing.assert_close(halfway, (maps[:, :-1] + maps[:, 1:]) / 2)


def test_adapter_uses_the_stored_map_at_its_own_size():
    adapter = paper(make_vit())
    resized = resize_coefficients(adapter.maps['0'].coefficients, (14, 14))
    assert resized is adapter.maps['0'].coefficients


def test_maps_are_one_tensor_shared_by_all_blocks_with_gradients_from_each():
    backbone = make_vit()
    adapter = paper(backbone)
    names = [name for name, _ in adapter.named_parameters() if name.startswith('maps.')]
    assert names == ['maps.0.coefficients']
    maps = adapter.maps['0'].coefficients
    assert maps.shape == (3, 14, 14, 2)
    for site in backbone.sites():
        maps.grad = None
        x = torch.randn(1, 6, 5, site.width)
        adapter.adapt_map(site, x, None).square().sum().backward()
        assert maps.grad is not None and maps.grad.abs().sum() > 0, site.index


def capture_block(block):
    """Records the block input, norm1's input after the adapter's hook and the block output."""
    seen = {}
    block.register_forward_pre_hook(lambda m, args: seen.__setitem__('x', args[0]))
    block.norm1.register_forward_pre_hook(lambda m, args: seen.__setitem__('u', args[0]))
    block.register_forward_hook(lambda m, args, out: seen.__setitem__('out', out))
    return seen


def test_vit_prefix_tokens_unchanged_and_residual_keeps_x():
    backbone = make_vit().eval()
    block = backbone.model.blocks[1]
    prefix = backbone.model.num_prefix_tokens
    assert prefix == 5  # class + 4 registers
    seen = capture_block(block)
    backbone(torch.randn(2, 3, 56, 84))
    x, u = seen['x'], seen['u']
    torch.testing.assert_close(u[:, :prefix], x[:, :prefix], rtol=0, atol=0)
    assert not torch.allclose(u[:, prefix:], x[:, prefix:], atol=1e-3)
    norm1 = block.norm1  # x = x + Attn(norm1(U(x))); x = x + MLP(norm2(x))
    attended = F.layer_norm(u, norm1.normalized_shape, norm1.weight, norm1.bias, norm1.eps)
    y = x + block.ls1(block.attn(attended))
    expected = y + block.ls2(block.mlp(block.norm2(y)))
    torch.testing.assert_close(seen['out'], expected)


def test_entropy_schedule_is_a_decaying_reward():
    assert [entropy_decay(p) for p in (0.0, 0.25, 0.5, 0.8, 1.0)] == [1.0, 0.5, 0.0, 0.0, 0.0]
    backbone = make_vit(entropy_weight=0.02)
    adapter = paper(backbone)
    assert adapter.auxiliary_losses(0.0) == {}  # nothing ran yet
    backbone(torch.randn(1, 3, 56, 56))
    terms = adapter.auxiliary_losses(0.0)
    entropies = [routing_entropy(block.routing()) for block in adapter.blocks.values()]
    torch.testing.assert_close(terms['loss_prior_entropy'], -0.02 * sum(entropies))
    assert terms['loss_prior_entropy'] < 0  # a reward: more balanced priors, lower loss
    quarter = adapter.auxiliary_losses(0.25)['loss_prior_entropy']
    torch.testing.assert_close(quarter, terms['loss_prior_entropy'] / 2)
    assert adapter.auxiliary_losses(0.6)['loss_prior_entropy'] == 0
    with torch.no_grad():  # uniform routing has the highest entropy: the lowest loss
        for block in adapter.blocks.values():
            block.logits.zero_()
    assert adapter.auxiliary_losses(0.0)['loss_prior_entropy'] < terms['loss_prior_entropy']
    logged = {k for k in terms if 'loss' not in k}
    assert logged == {f'paper_w_b{b}_{p}' for b in (0, 1) for p in ('heat', 'wave', 'poisson')
                      } | {'paper_entropy'}
    assert not any(k.startswith('route_') for k in terms)  # MoPPA's keys
    total = sum(terms[f'paper_w_b0_{p}'] for p in ('heat', 'wave', 'poisson'))
    torch.testing.assert_close(total, torch.tensor(1.0))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_backbone_autocast_outputs_are_finite(factory, dtype):
    backbone = factory()
    backbone.autocast_dtype = dtype
    outputs = backbone(torch.randn(1, 3, 56, 70))
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outputs)


def test_spectral_path_runs_in_float32_under_autocast():
    backbone = make_vit()
    adapter, site = paper(backbone), backbone.sites()[0]
    x = torch.randn(2, 9, 11, site.width) * 10
    exact = adapter.adapt_map(site, x, None)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under_autocast = adapter.adapt_map(site, x, None)
        in_bf16 = spectral_filter(x, adapter.response(0, (9, 11)))  # what autocast would do
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, exact, rtol=1e-5, atol=1e-5)
    assert (in_bf16.float() - exact).abs().max() > 1e-2  # so the check above can fail
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = adapter.adapt_map(site, x.bfloat16(), None)
    assert low.dtype == torch.bfloat16
    reference = adapter.adapt_map(site, x.bfloat16().float(), None)
    torch.testing.assert_close(low.float(), reference, rtol=8e-3, atol=1e-2)


def test_step_zero_is_a_fixed_low_pass_mix_not_the_identity():
    backbone = make_vit()
    adapter = paper(backbone)
    for index, params in adapter.blocks.items():
        weights = params.routing().detach()
        poisson = torch.relu(params.times[2].detach())
        expected = (weights[0][:, None] + weights[1][:, None]
                    + weights[2][:, None] * poisson[None]).flatten()  # c = h * head_dim + j
        dc = adapter.response(int(index), (6, 9))[0, 0].detach()
        torch.testing.assert_close(dc, expected)
        assert 0.75 < dc.mean() < 0.9  # METHOD.md: about 0.83
        highest = adapter.response(int(index), (6, 9))[-1, -1].detach()
        assert (highest < dc).all()  # heat attenuates, so does the Poisson gain
    plain = MoPPAViT(**TINY_VIT, adapter=None)
    plain.model.load_state_dict(backbone.model.state_dict())
    x = torch.randn(1, 3, 56, 70)
    assert not torch.allclose(backbone(x)[0], plain(x)[0], atol=1e-3)


@pytest.mark.parametrize('factory', [make_vit, make_swin])
def test_every_parameter_gets_a_gradient(factory):
    backbone = factory()
    adapter = paper(backbone)
    outputs = backbone(torch.randn(1, 3, 64, 80))
    loss = sum(o.square().mean() for o in outputs) + adapter.auxiliary_losses(0.1)[
        'loss_prior_entropy']
    loss.backward()
    for name, parameter in adapter.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_each_image_filtered_on_its_own_valid_grid():
    backbone = make_vit()
    adapter, site = paper(backbone), backbone.sites()[0]
    alone = torch.randn(1, 4, 7, site.width)
    batch = torch.randn(2, 9, 7, site.width)  # the other image is portrait, 9 x 5
    batch[0, :4, :7] = alone[0]
    valid = [(4, 7), (9, 5)]
    out = adapter.adapt_map(site, batch, valid)
    torch.testing.assert_close(out[0, :4], adapter.adapt_map(site, alone, None)[0])
    torch.testing.assert_close(out[0, 4:], batch[0, 4:], rtol=0, atol=0)  # padding unchanged
    torch.testing.assert_close(out[1:, :, :5], adapter.adapt_map(site, batch[1:, :, :5], None))
    padded = adapter.adapt_map(site, batch, None)  # the canvas as one image differs
    assert not torch.allclose(padded[0, :4], out[0, :4], atol=1e-3)


def test_host_passes_each_images_valid_grid():
    backbone = make_vit().eval()
    adapter, site = paper(backbone), backbone.sites()[0]
    seen = capture_block(backbone.model.blocks[0])
    backbone.set_image_sizes([(56, 98), (98, 56)])  # 4x7 and 7x4 patches on a 7x7 canvas
    backbone(torch.randn(2, 3, 98, 98))
    prefix = backbone.model.num_prefix_tokens
    x = seen['x'][:, prefix:].reshape(2, 7, 7, -1)
    u = seen['u'][:, prefix:].reshape(2, 7, 7, -1)
    torch.testing.assert_close(u[0, :4], adapter.adapt_map(site, x[:1, :4], None)[0])
    torch.testing.assert_close(u[1, :, :4], adapter.adapt_map(site, x[1:, :, :4], None)[0])


def test_swin_has_one_map_per_stage_with_its_heads():
    backbone = make_swin()
    adapter = paper(backbone)
    heads = TINY_SWIN['model_kwargs']['num_heads']
    assert sorted(adapter.maps, key=int) == ['0', '1', '2', '3']
    for stage, count in enumerate(heads):
        assert adapter.maps[str(stage)].coefficients.shape == (3, 14, 14, count)
    for site in backbone.sites():
        params = adapter.blocks[str(site.index)]
        assert params.times.shape == (3, site.width // site.num_heads)
        assert params.logits.shape == (3, site.num_heads)
        assert params.temperature.shape == (site.num_heads,)
        assert adapter.response(site.index, (5, 6)).shape == (5, 6, site.width)


def test_parameter_count_and_initialisation():
    adapter = paper(make_vit())
    blocks, heads, width = 2, 2, 32
    per_block = 3 * (width // heads) + 3 * heads + heads
    assert sum(p.numel() for p in adapter.parameters()) == 3 * 14 * 14 * heads + blocks * per_block
    assert torch.equal(adapter.maps['0'].coefficients, torch.ones(3, 14, 14, heads))
    params = adapter.blocks['0']
    assert torch.equal(params.temperature, torch.full((heads,), 5.0))
    assert 0.3 < params.times[2].mean() < 0.7 and 0.0 < params.times[:2].mean() < 0.1
    assert all(getattr(m, 'no_weight_decay', False) for m in (*adapter.maps.values(),
                                                              *adapter.blocks.values()))


def test_prior_subset_and_options():
    backbone = make_vit(priors=('heat', 'poisson'), map_size=7, map_resize='bicubic',
                        time_mean=dict(heat=0.2))
    adapter = paper(backbone)
    assert adapter.options.map_size == (7, 7)
    assert adapter.maps['0'].coefficients.shape == (2, 7, 7, 2)
    assert adapter.options.time_mean == dict(heat=0.2, wave=0.05, poisson=0.5)
    backbone(torch.randn(1, 3, 56, 56))
    assert {k for k in adapter.auxiliary_losses(0.0) if k.startswith('paper_w_b0')} == {
        'paper_w_b0_heat', 'paper_w_b0_poisson'}
    for bad, field in [(dict(priors=('heat', 'sound')), 'priors'), (dict(map_size=0), 'map_size'),
                       (dict(map_resize='nearest'), 'map_resize'),
                       (dict(entropy_weight=-1.0), 'entropy_weight'),
                       (dict(time_std=dict(wave=-0.1)), 'time_std'),
                       (dict(temperature=0.0), 'temperature'), (dict(map_sise=7), 'map_size')]:
        with pytest.raises(ValueError, match=field):
            make_vit(**bad)


def test_checkpoint_ignores_the_entropy_weight_only():
    state = make_vit(entropy_weight=0.05).state_dict()
    make_vit(entropy_weight=0.0).load_state_dict(state)
    with pytest.raises(BackboneCheckpointMismatch):
        make_vit(map_size=7).load_state_dict(state)


def test_no_weight_decay_and_gradients_under_activation_checkpointing():
    from moppa_det.engine.optim_constructor import TrainableOptimWrapperConstructor
    backbone = MoPPAViT(**TINY_VIT, adapter=dict(type='MoPPAPaper'), with_cp=True).train()
    adapter = paper(backbone)
    backbone(torch.randn(1, 3, 56, 70))[0].square().mean().backward()
    for name, parameter in adapter.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    constructor = TrainableOptimWrapperConstructor(dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)))
    groups = constructor(backbone).optimizer.param_groups
    grouped = [id(p) for group in groups for p in group['params']]
    assert sorted(grouped) == sorted(id(p) for p in adapter.parameters())  # each once
    assert all(group['weight_decay'] == 0 for group in groups)
