"""LoRA and AdaptFormer baselines: zero-init identity, gradient flow, parameter counts."""
import pytest
import torch
from torch import nn

from moppa_det.models.baselines import AdaptFormerAdapter, LoRALinear


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
