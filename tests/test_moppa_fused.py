"""The MoPPA unit's inference form (models/moppa/fused.py): same values as the training form to
float32 rounding, taken only where it may be, its cached weights never stale."""
import copy

import pytest
import torch

from moppa_det.models.moppa import MoPPAConfig, MoPPAUnit
from moppa_det.ops import idct2

CONFIGS = [MoPPAConfig(), MoPPAConfig(router='sample'), MoPPAConfig(router='uniform'),
           MoPPAConfig(priors=('wave',), activation='gelu'),
           MoPPAConfig(priors=('heat', 'poisson'), source='add', poisson='literal', scale=0.5)]


def trained_unit(config=None, dim=16, std=0.3):
    """A unit in eval() with every parameter moved off its init (output path non-zero)."""
    unit = MoPPAUnit(dim, config)
    with torch.no_grad():
        for param in unit.parameters():
            param.add_(torch.randn_like(param) * std)
    return unit.eval()


def training_form(unit, *args, **kwargs):
    """The unit's training computation on a fresh copy (empty caches), detached."""
    return copy.deepcopy(unit).train()(*args, **kwargs).detach()


def assert_rounding_close(actual, expected):
    """Equal to float32 rounding, relative to the largest value."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: f'{c.router}-{"+".join(c.priors)}')
def test_inference_form_equals_the_training_form(config):
    unit = trained_unit(config)
    x = torch.randn(2, 5, 7, 16)
    tokens = torch.randn(2, 3 + 5 * 7, 16)
    with torch.no_grad():
        assert unit.uses_fused_path(x)
        fused = unit(x)
        fused_tokens = unit(tokens, grid=(5, 7), num_prefix_tokens=3)
    expected = training_form(unit, x)
    assert_rounding_close(fused, expected)
    assert_rounding_close(fused_tokens, training_form(unit, tokens, grid=(5, 7),
                                                      num_prefix_tokens=3))
    assert torch.equal(fused_tokens[:, :3], tokens[:, :3])
    assert (expected - x).abs().max() > 0.1  # a real update: the check can fail


def test_inference_form_records_no_routing_statistics():
    unit = trained_unit()
    with torch.no_grad():
        unit(torch.randn(1, 4, 5, 16))
    assert unit.last_mean_alpha is None and unit.last_token_entropy is None
    unit.train()(torch.randn(1, 4, 5, 16))
    assert unit.last_mean_alpha is not None


def test_inference_form_only_where_it_may_run():
    unit = MoPPAUnit(8)
    x = torch.randn(1, 3, 4, 8)
    assert not unit.uses_fused_path(x)  # training mode
    unit.eval()
    assert not unit.uses_fused_path(x)  # autograd may reach the parameters
    with torch.no_grad():
        assert unit.uses_fused_path(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not unit.uses_fused_path(x)
        assert not MoPPAUnit(8, MoPPAConfig(bottleneck=None)).eval().uses_fused_path(x)
        unit.fused_cache.enabled = False  # set_inference_caches(..., False)
        assert not unit.uses_fused_path(x)
    unit.fused_cache.enabled = True
    unit.requires_grad_(False)
    assert unit.uses_fused_path(x)  # frozen: nothing to differentiate through the cache


def test_inference_form_passes_gradients_to_the_input():
    """Frozen unit, input that requires grad (saliency maps): the same input gradient."""
    unit = trained_unit().requires_grad_(False)
    x = torch.randn(1, 4, 5, 16, requires_grad=True)
    torch.autograd.grad(unit(x).square().sum(), x)  # fused (cached weights)
    fused_grad, = torch.autograd.grad(unit(x).square().sum(), x)
    reference = copy.deepcopy(unit).train()
    expected, = torch.autograd.grad(reference(x).square().sum(), x)
    assert_rounding_close(fused_grad, expected)


def test_fused_weights_follow_updates_train_load_and_new_grids():
    unit = trained_unit()
    x, wide = torch.randn(1, 4, 5, 16), torch.randn(1, 4, 9, 16)
    with torch.no_grad():
        before = unit(x)
        assert torch.equal(unit(x), before) and unit.fused_cache.hits == 1
        unit.up.weight.add_(0.5)  # an optimizer step: the version counter moves
        after = unit(x)
        assert not torch.allclose(after, before, atol=1e-3)
        assert_rounding_close(after, training_form(unit, x))
        assert_rounding_close(unit(wide), training_form(unit, wide))  # a new grid size
        unit.router.proj.bias.data = unit.router.proj.bias.data + 1.0  # new storage
        assert_rounding_close(unit(x), training_form(unit, x))
        other = trained_unit()
        unit.load_state_dict(other.state_dict())
        assert_rounding_close(unit(x), training_form(other, x))
    assert len(unit.fused_cache) and len(unit.priors.filter_cache)
    unit.train()
    assert len(unit.fused_cache) == 0 and len(unit.priors.filter_cache) == 0


def test_spatial_responses_are_the_inverse_transformed_spectra():
    unit = trained_unit()
    z = torch.randn(2, 5, 7, 8)
    with torch.no_grad():
        responses = unit.priors.spatial_responses(z)  # (B, H, W, P, C)
    expected = idct2(unit.priors(z.permute(0, 3, 1, 2))).permute(0, 3, 4, 1, 2).detach()
    assert_rounding_close(responses, expected)


def test_inference_threads_limit_only_inference_and_are_restored():
    from moppa_det.ops.threads import inference_threads, limited_threads, set_inference_threads
    cpu, previous = torch.device('cpu'), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        with torch.no_grad(), limited_threads(cpu):
            seen.append(torch.get_num_threads())
        with limited_threads(cpu):  # autograd on: training keeps PyTorch's threads
            seen.append(torch.get_num_threads())
        with pytest.raises(RuntimeError), torch.no_grad(), limited_threads(cpu):
            raise RuntimeError('restored on errors too')
        assert seen == [1, 2] and torch.get_num_threads() == 2 and inference_threads() == 1
        unit, x = trained_unit(), torch.randn(1, 4, 5, 16)
        with torch.no_grad():
            serial = unit(x)
            set_inference_threads(None)
            with limited_threads(cpu):
                assert torch.get_num_threads() == 2
            assert_rounding_close(unit(x), serial)
        with pytest.raises(ValueError, match='>= 1'):
            set_inference_threads(0)
    finally:
        set_inference_threads(1)
        torch.set_num_threads(previous)
