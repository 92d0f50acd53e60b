"""LoRA, AdaptFormer, SSF and RLRR baselines: init, maths, gradient flow, parameter counts."""
import pytest
import torch
from torch import nn

from moppa_det.models.baselines import (
    AdaptFormerAdapter,
    LoRALinear,
    LoRAUpdate,
    RLRRUpdate,
    SSFAffine,
)


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_lora_is_the_base_layer_at_init():
    base = nn.Linear(12, 36)
    lora = LoRALinear(base, rank=4, alpha=8.0)
    x = torch.randn(2, 7, 12)
    assert torch.equal(lora(x), base(x))
    assert torch.equal(lora.lora_delta(x), torch.zeros(2, 7, 36))


def test_lora_parameter_count_and_frozen_base():
    lora = LoRALinear(nn.Linear(768, 3 * 768), rank=8)
    assert trainable(lora) == 8 * (768 + 3 * 768)
    assert not any(p.requires_grad for p in lora.base.parameters())


def test_lora_gradients_reach_only_the_update():
    lora = LoRALinear(nn.Linear(12, 36), rank=4, dropout=0.1)
    lora(torch.randn(2, 7, 12)).square().sum().backward()
    # B is zero at init, so only B gets a gradient on the first step ...
    assert lora.lora_b.grad.abs().sum() > 0
    assert lora.lora_a.grad.abs().sum() == 0
    assert lora.base.weight.grad is None and lora.base.bias.grad is None
    # ... and A as soon as B is non-zero.
    with torch.no_grad():
        lora.lora_b.normal_()
    lora.zero_grad()
    lora(torch.randn(2, 7, 12)).square().sum().backward()
    assert lora.lora_a.grad.abs().sum() > 0


def test_lora_scaling_and_reset():
    lora = LoRALinear(nn.Linear(6, 6), rank=2, alpha=6.0)
    with torch.no_grad():
        lora.lora_b.fill_(1.0)
    x = torch.randn(3, 6)
    expected = 3.0 * x @ lora.lora_a.T @ lora.lora_b.T
    torch.testing.assert_close(lora.lora_delta(x), expected)
    lora.reset_parameters()
    assert torch.equal(lora.lora_b, torch.zeros(6, 2))
    with pytest.raises(ValueError):
        LoRALinear(nn.Linear(6, 6), rank=0)


@pytest.mark.parametrize('learnable_scale', [False, True])
def test_adaptformer_delta_is_zero_at_init(learnable_scale):
    adapter = AdaptFormerAdapter(16, bottleneck=4, learnable_scale=learnable_scale)
    x = torch.randn(2, 9, 16)
    assert torch.equal(adapter(x), torch.zeros_like(x))


@pytest.mark.parametrize('learnable_scale, extra', [(False, 0), (True, 1)])
def test_adaptformer_parameter_count(learnable_scale, extra):
    adapter = AdaptFormerAdapter(768, bottleneck=10, learnable_scale=learnable_scale)
    assert trainable(adapter) == 2 * 768 * 10 + 10 + 768 + extra


def test_adaptformer_gradients_reach_every_parameter():
    adapter = AdaptFormerAdapter(16, bottleneck=4, learnable_scale=True)
    frozen = nn.Linear(16, 16).requires_grad_(False)  # stands in for the frozen MLP branch
    with torch.no_grad():
        adapter.up.weight.normal_()
    x = torch.randn(2, 9, 16)
    (x + frozen(x) + adapter(x)).square().sum().backward()
    for name, param in adapter.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert frozen.weight.grad is None
    with torch.no_grad():
        adapter.scale.fill_(3.0)
    adapter.reset_parameters()
    assert adapter.scale.item() == pytest.approx(0.1)
    assert torch.equal(adapter(x), torch.zeros_like(x))


def test_lora_update_is_the_delta_of_lora_linear():
    torch.manual_seed(0)
    base = nn.Linear(6, 10)
    lora = LoRALinear(base, rank=3, alpha=6.0)
    update = LoRAUpdate(6, 10, rank=3, alpha=6.0)
    update.load_state_dict({k: v for k, v in lora.state_dict().items() if k.startswith('lora')})
    with torch.no_grad():
        for module in (lora, update):
            module.lora_b.fill_(0.5)
    x = torch.randn(4, 6)
    torch.testing.assert_close(update(x), lora(x) - base(x))
    assert trainable(update) == trainable(lora) == 3 * (6 + 10)


@pytest.mark.parametrize('init, identity', [('normal', False), ('identity', True)])
def test_ssf_affine_init_and_maths(init, identity):
    ssf = SSFAffine(8, init=init)
    x = torch.randn(2, 3, 5, 8)  # channels last
    assert torch.equal(ssf(x), x) == identity
    torch.testing.assert_close(ssf(x), x * ssf.scale + ssf.shift)
    assert ssf.no_weight_decay and trainable(ssf) == 16
    assert ssf(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match='channels'):
        ssf(torch.randn(2, 8, 5))
    with pytest.raises(ValueError, match='init'):
        SSFAffine(8, init='ones')


def test_ssf_normal_init_statistics():
    torch.manual_seed(0)
    ssf = SSFAffine(20000, std=0.02)
    assert abs(ssf.scale.mean().item() - 1) < 1e-3 and abs(ssf.scale.std().item() - 0.02) < 1e-3
    assert abs(ssf.shift.mean().item()) < 1e-3 and abs(ssf.shift.std().item() - 0.02) < 1e-3


def test_rlrr_update_both_forms_agree_and_match_the_formula():
    rlrr = RLRRUpdate(6, 4)
    with torch.no_grad():
        rlrr.bias_shift.normal_()
    weight = torch.randn(4, 6)
    expected_weight = weight * torch.outer(rlrr.scale_out, rlrr.scale_in)
    for tokens in (1, 50):  # factorised, then materialised weight
        x = torch.randn(tokens, 6)
        torch.testing.assert_close(rlrr(x, weight), x @ expected_weight.T + rlrr.bias_shift)
    assert trainable(rlrr) == 6 + 2 * 4 and rlrr.no_weight_decay


def test_rlrr_init_bounds_as_the_authors_kaiming_uniform():
    torch.manual_seed(0)
    rlrr = RLRRUpdate(600, 5000)
    bound_in, bound_out = (6 / 600) ** 0.5, 6 ** 0.5
    assert rlrr.scale_in.abs().max() <= bound_in < 1.01 * rlrr.scale_in.abs().max()
    assert rlrr.scale_out.abs().max() <= bound_out < 1.01 * rlrr.scale_out.abs().max()
    assert torch.equal(rlrr.bias_shift, torch.zeros(5000))
    identity = RLRRUpdate(600, 50, init='identity')
    assert torch.equal(identity(torch.randn(3, 600), torch.randn(50, 600)), torch.zeros(3, 50))
    with pytest.raises(ValueError, match='init'):
        RLRRUpdate(6, 4, init='zeros')


def test_rlrr_identity_init_still_learns():
    rlrr = RLRRUpdate(6, 4, init='identity')
    weight = torch.randn(4, 6)
    (rlrr(torch.randn(3, 6), weight) * torch.randn(3, 4)).sum().backward()  # loss linear in y
    assert rlrr.scale_out.grad.abs().sum() > 0 and rlrr.bias_shift.grad.abs().sum() > 0
    assert rlrr.scale_in.grad.abs().sum() == 0  # s_out = 0 at init, as LoRA's B
