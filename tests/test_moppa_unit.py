"""The MoPPA unit, router, route regularization and config validation."""
import pytest
import torch

from moppa_det.models.moppa import (
    MoPPAConfig,
    MoPPAUnit,
    Router,
    RouteRegConfig,
    decayed_weight,
    route_penalty,
)
from moppa_det.ops import dct2, idct2


def perturb_output(unit: MoPPAUnit) -> None:
    """Makes the zero-init output path non-zero, as one optimizer step would."""
    with torch.no_grad():
        if unit.up is not None:
            unit.up.weight.normal_(std=0.1)
        else:
            unit.channel_scale.normal_(std=0.1)


def test_parameter_budget_matches_method():
    unit = MoPPAUnit(768)
    assert sum(p.numel() for p in unit.parameters()) == 6152 + 6912 + 2307 + 24 + 196


@pytest.mark.parametrize('config', [
    MoPPAConfig(), MoPPAConfig(router='sample'), MoPPAConfig(router='uniform'),
    MoPPAConfig(bottleneck=None), MoPPAConfig(priors=('wave',), activation='gelu')])
def test_zero_init_is_identity(config):
    unit = MoPPAUnit(16, config)
    tokens = torch.randn(2, 1 + 4 * 5, 16)
    assert torch.equal(unit(tokens, grid=(4, 5), num_prefix_tokens=1), tokens)
    feature_map = torch.randn(2, 6, 3, 16)
    assert torch.equal(unit(feature_map), feature_map)


def test_prefix_tokens_are_untouched_and_patches_change():
    unit = MoPPAUnit(16)
    perturb_output(unit)
    tokens = torch.randn(2, 5 + 3 * 3, 16)
    out = unit(tokens, grid=(3, 3), num_prefix_tokens=5)
    assert torch.equal(out[:, :5], tokens[:, :5])
    assert not torch.allclose(out[:, 5:], tokens[:, 5:])


def test_token_and_map_inputs_agree():
    unit = MoPPAUnit(8)
    perturb_output(unit)
    feature_map = torch.randn(2, 4, 6, 8)
    from_tokens = unit(feature_map.reshape(2, 24, 8), grid=(4, 6))
    torch.testing.assert_close(from_tokens.reshape(2, 4, 6, 8), unit(feature_map))


def test_wrong_token_count_is_explained():
    with pytest.raises(ValueError, match='do not match'):
        MoPPAUnit(8)(torch.randn(1, 10, 8), grid=(3, 3), num_prefix_tokens=0)
    with pytest.raises(ValueError, match='grid'):
        MoPPAUnit(8)(torch.randn(1, 9, 8))


@pytest.mark.parametrize('mode', ['token', 'sample', 'uniform'])
def test_router_weights_are_the_softmax_of_the_right_tokens(mode):
    """Values against a hand-written softmax: per token, of the mean token, or 1/P."""
    router = Router(12, 3, mode)
    if router.proj is not None:
        torch.nn.init.normal_(router.proj.weight)
        torch.nn.init.normal_(router.proj.bias)
    tokens = torch.randn(2, 7, 12)
    alpha = router(tokens)
    if mode == 'uniform':
        expected = torch.full((2, 1, 3), 1 / 3)
    else:
        pooled = tokens if mode == 'token' else tokens.mean(dim=1, keepdim=True)
        logits = pooled @ router.proj.weight.T + router.proj.bias
        expected = logits.exp() / logits.exp().sum(-1, keepdim=True)
        assert expected.std(dim=-1).mean() > 0.05  # non-uniform: the test can tell modes apart
    torch.testing.assert_close(alpha, expected.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(alpha.shape[:2]))  # METHOD.md property


def test_single_prior_router_is_one():
    assert torch.equal(Router(4, 1)(torch.randn(1, 3, 4)), torch.ones(1, 1, 1))


def test_spectral_mix_equals_spatial_mix():
    unit = MoPPAUnit(8, MoPPAConfig(router='sample'))
    z = torch.randn(2, 8, 5, 7)
    alpha = torch.softmax(torch.randn(2, 1, 3), -1)
    per_prior = idct2(unit.priors(z))  # (B, P, C, H, W)
    expected = (per_prior * alpha.reshape(2, 3, 1, 1, 1)).sum(1)
    torch.testing.assert_close(unit._mix_priors(z, alpha), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('config', [MoPPAConfig(), MoPPAConfig(bottleneck=None),
                                    MoPPAConfig(router='sample', activation='gelu')])
def test_every_parameter_gets_a_gradient(config):
    unit = MoPPAUnit(16, config)
    perturb_output(unit)
    with torch.no_grad():  # a non-uniform router, so route gradients are non-zero as well
        unit.router.proj.weight.normal_(std=0.1)
    out = unit(torch.randn(2, 6, 5, 16))
    loss = out.square().mean() + route_penalty(unit.last_mean_alpha[None])
    loss.backward()
    for name, param in unit.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_output_is_finite_in_input_dtype(dtype):
    unit = MoPPAUnit(16)
    perturb_output(unit)
    x = torch.randn(2, 9, 7, 16) * 30
    with torch.autocast('cpu', dtype=dtype):
        out = unit(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), unit(x), atol=1.0, rtol=0.05)


def test_spectral_path_runs_in_float32_under_bf16_autocast(monkeypatch):
    """The mix of the priors (DCT, gains, inverse DCT) inside a bf16 autocast region equals the
    float32 computation on the same input to 1e-5: bf16 matmuls (8-bit mantissa, relative
    error ~4e-3) cannot meet that."""
    unit = MoPPAUnit(16)
    perturb_output(unit)
    with torch.no_grad():
        unit.router.proj.weight.normal_(std=0.3)
    seen = []
    mix = unit._mix_priors

    def recording_mix(z, alpha):
        out = mix(z, alpha)
        seen.append((z.detach().clone(), alpha.detach().clone(), out.detach()))
        return out

    monkeypatch.setattr(unit, '_mix_priors', recording_mix)
    x = torch.randn(2, 9, 7, 16) * 30
    with torch.autocast('cpu', dtype=torch.bfloat16):
        unit(x.bfloat16())
    (z, alpha, out), = seen
    assert z.dtype == alpha.dtype == out.dtype == torch.float32
    with torch.no_grad():
        reference = mix(z, alpha)  # outside autocast: float32 throughout
    scale = reference.abs().max()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5 * float(scale))
    # A tolerance bf16 cannot meet: a DCT round trip in bf16 alone misses it 100-fold.
    round_trip = idct2(dct2(z.bfloat16()).float())
    assert (round_trip - z).abs().max() > 1e-3 * z.abs().max()


def test_routing_statistics_are_recorded():
    unit = MoPPAUnit(8)
    unit(torch.randn(1, 3, 3, 8))
    torch.testing.assert_close(unit.last_mean_alpha, torch.full((3,), 1 / 3))
    torch.testing.assert_close(unit.last_token_entropy, torch.log(torch.tensor(3.0)))
    # A trained router: the statistics of its actual per-token weights.
    with torch.no_grad():
        unit.router.proj.weight.normal_()
    x = torch.randn(2, 3, 4, 8)
    unit(x)
    alpha = torch.softmax(x.reshape(2, 12, 8) @ unit.router.proj.weight.T
                          + unit.router.proj.bias, dim=-1).detach()
    torch.testing.assert_close(unit.last_mean_alpha.detach(), alpha.mean(dim=(0, 1)))
    entropy = -(alpha * alpha.log()).sum(-1).mean()
    torch.testing.assert_close(unit.last_token_entropy, entropy)
    assert entropy < torch.log(torch.tensor(3.0)) - 0.05  # far from uniform: a real check


# Two units' mean routings, neither uniform, and the penalties worked out by hand for each:
# l2 = sum_i (m_i - 1/3)^2; entropy = log 3 + sum_i m_i log m_i; kl = -log 3 - mean_i log m_i.
ROUTINGS = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]
HAND_PENALTIES = {
    # (0.3667^2 + 0.1333^2 + 0.2333^2, 0.1333^2 + 0.1667^2 + 0.0333^2) / 2
    'l2': (0.2066667 + 0.0466667) / 2,
    # (1.0986123 - 0.8018186, 1.0986123 - 1.0296530) / 2
    'entropy': (0.2967937 + 0.0689593) / 2,
    # (-1.0986123 + 1.4228993, -1.0986123 + 1.1688526) / 2
    'kl': (0.3242870 + 0.0702403) / 2,
}


@pytest.mark.parametrize('kind', ['l2', 'entropy', 'kl'])
def test_route_penalty_values_tell_the_kinds_apart(kind):
    assert route_penalty(torch.full((4, 3), 1 / 3), kind).abs() < 1e-6
    value = route_penalty(torch.tensor(ROUTINGS, dtype=torch.float64), kind)
    assert float(value) == pytest.approx(HAND_PENALTIES[kind], abs=2e-7)
    others = [v for k, v in HAND_PENALTIES.items() if k != kind]
    assert all(abs(float(value) - other) > 1e-2 for other in others)


def test_route_weight_decays_linearly():
    assert decayed_weight(0.01, None, 0.9) == 0.01
    assert decayed_weight(0.01, 0.5, 0.0) == 0.01
    assert decayed_weight(0.01, 0.5, 0.25) == pytest.approx(0.005)
    assert decayed_weight(0.01, 0.5, 0.75) == 0.0


@pytest.mark.parametrize('options, message', [
    (dict(priors=('heat', 'wav')), "Did you mean 'wave'"),
    (dict(bottleneck=0), 'bottleneck=0'),
    (dict(router='tokens'), "Did you mean 'token'"),
    (dict(init_kt=-1.0), 'init_kt'),
    (dict(priors=()), 'at least one'),
    (dict(bottlenek=4), "unknown key 'bottlenek'. Did you mean 'bottleneck'"),
])
def test_config_errors_name_the_problem(options, message):
    with pytest.raises(ValueError, match=message):
        MoPPAConfig.from_dict(options)


def test_route_reg_config_validates():
    assert RouteRegConfig.from_dict(dict(weight=0.1)).weight == 0.1
    with pytest.raises(ValueError, match=r"^model\.route_reg: kind='cosine' is not one of"):
        RouteRegConfig(kind='cosine')
    with pytest.raises(ValueError, match='unknown key'):
        RouteRegConfig.from_dict(dict(wieght=1.0))
