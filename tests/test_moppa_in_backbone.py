"""MoPPA's options, route loss and checkpointing inside a tiny timm backbone, with trained units.

Each option is run with non-zero updates and compared with the default option on the same
weights; the route loss's gradient is checked on its own, against autograd on its formula; its
weight decays with the runner's progress as MMEngine's MessageHub reports it.
"""
from __future__ import annotations

import pytest
import torch
from conftest import TINY_SWIN, TINY_VIT
from mmengine.logging import MessageHub

from moppa_det.models.backbones import MoPPASwin, MoPPAViT
from moppa_det.models.moppa import decayed_weight

# A grid of 5 x 7 patches (patch 14): neither square nor the source map's 14 x 14.
IMAGE = (70, 98)


def units(backbone):
    return backbone.adapters['moppa'].units


def perturb(backbone) -> None:
    """Gives every adapter parameter a value of its own, the same for the same names and shapes,
    as training would: non-zero updates, a non-uniform router, a non-constant source map."""
    with torch.no_grad():
        for name, param in backbone.adapters.named_parameters():
            generator = torch.Generator().manual_seed(sum(map(ord, name)))
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith('priors.source'):
                param.copy_(1.0 + 0.5 * noise)
            elif '.priors.' in name:  # raw k, c, t: keep the filters in a sensible range
                param.add_(0.3 * noise)
            else:
                param.copy_(0.3 * noise)


def vit(**options) -> MoPPAViT:
    torch.manual_seed(0)  # the same frozen weights for every option
    backbone = MoPPAViT(**TINY_VIT, adapter=dict(type='MoPPA', **options))
    perturb(backbone)
    return backbone.train()


def images() -> torch.Tensor:
    return torch.randn(2, 3, *IMAGE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('option', [
    dict(placement='before_norm'), dict(router='sample'), dict(poisson='literal'),
    dict(source='add'), dict(source_resize='bicubic')], ids=lambda o: '='.join(*o.items()))
def test_each_option_changes_the_output_and_trains_every_parameter(option):
    x = images()
    default, plain = vit(), MoPPAViT(**TINY_VIT, adapter=None)
    optioned = vit(**option)
    plain.model.load_state_dict(default.model.state_dict())
    base = plain(x)[0]
    reference = default(x)[0]
    out = optioned(x)[0]
    update = (reference - base).abs().mean()
    assert update > 1e-2  # the units do change the features
    # The option changes the update by a fraction of it far above rounding (bicubic against
    # bilinear resizing of the source map, the smallest change here: about 2 %).
    assert (out - reference).abs().mean() > 5e-3 * update, option
    sum(o.square().mean() for o in optioned(x)).backward()
    for name, param in optioned.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def router_inputs(backbone) -> dict[str, list[torch.Tensor]]:
    """Records, per unit, the tokens its router sees in each forward (detached)."""
    seen: dict[str, list[torch.Tensor]] = {}
    for key, unit in units(backbone).items():
        seen[key] = []
        unit.router.register_forward_hook(
            lambda module, args, out, key=key: seen[key].append(args[0].detach()))
    return seen


def route_loss_by_formula(tokens: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                          biases: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
    """scale * mean over units of sum_i (mean alpha_i - 1/3)^2, alpha = softmax(a W^T + b)."""
    penalties = []
    for key, a in tokens.items():
        mean_alpha = torch.softmax(a @ weights[key].T + biases[key], dim=-1).mean(dim=(0, 1))
        penalties.append(((mean_alpha - 1 / 3) ** 2).sum())
    return scale * torch.stack(penalties).mean()


@pytest.mark.parametrize('trained_up', [False, True], ids=['step0', 'trained'])
def test_route_loss_gradient_is_its_formulas_and_reaches_no_filter(trained_up):
    """loss_route alone: the routers' gradients are those of the formula on the tokens the
    routers saw; the down-projections and the spectral filters get none.

    The last unit's router and its own output path are independent of its route statistics,
    so it gets nothing else either; an earlier unit's update feeds the tokens of the later
    routers, so once trained its parameters do get a (legitimate) share.
    """
    backbone = vit(route_reg=dict(weight=0.5))
    if not trained_up:
        with torch.no_grad():
            for unit in units(backbone).values():
                unit.up.weight.zero_()
                unit.up.bias.zero_()
    seen = router_inputs(backbone)
    backbone(images())
    backbone.auxiliary_losses()['loss_route'].backward()

    routers = {key: unit.router.proj for key, unit in units(backbone).items()}
    weights = {k: r.weight.detach().clone().requires_grad_() for k, r in routers.items()}
    biases = {k: r.bias.detach().clone().requires_grad_() for k, r in routers.items()}
    tokens = {key: torch.cat(values, dim=1) for key, values in seen.items()}
    route_loss_by_formula(tokens, weights, biases, 0.5).backward()
    last = max(routers, key=int)
    for key, router in routers.items():
        if trained_up and key != last:
            continue  # its update also shifts the later routers' inputs
        torch.testing.assert_close(router.weight.grad, weights[key].grad, rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(router.bias.grad, biases[key].grad, rtol=1e-4, atol=1e-8)
        assert router.weight.grad.abs().sum() > 0
    for key, unit in units(backbone).items():
        # What cannot reach any router's tokens: the filters behind a zero up-projection, and
        # everything of the last unit.
        silent = [unit.down, unit.priors] + ([unit.up] if key == last else [])
        if trained_up and key != last:
            silent = []
        for module in silent:
            for name, param in module.named_parameters():
                assert param.grad is None or not param.grad.any(), f'unit {key}: {name}'
    assert all(p.grad is None for p in backbone.model.parameters())


@pytest.fixture
def hub():
    """MMEngine's MessageHub with the runner's progress keys restored afterwards."""
    hub = MessageHub.get_current_instance()
    saved = {key: hub.runtime_info.get(key) for key in ('iter', 'max_iters')}
    yield hub
    for key, value in saved.items():
        if value is None:
            hub.runtime_info.pop(key, None)
        else:
            hub.update_info(key, value)


def test_route_loss_weight_decays_with_the_runners_progress(hub):
    backbone = vit(route_reg=dict(weight=0.2, decay_fraction=0.5))
    backbone(images())
    hub.update_info('max_iters', 200)
    penalty = None
    expected_scale = {0: 1.0, 50: 0.5, 80: 0.2, 100: 0.0, 150: 0.0}
    for iteration, scale in expected_scale.items():
        hub.update_info('iter', iteration)  # as RuntimeInfoHook does before each train step
        loss = backbone.auxiliary_losses()['loss_route']
        if penalty is None:
            penalty = loss / 0.2
            assert penalty > 1e-4  # a non-uniform routing: something to decay
        assert decayed_weight(0.2, 0.5, iteration / 200) == pytest.approx(0.2 * scale)
        torch.testing.assert_close(loss, 0.2 * scale * penalty, rtol=1e-6, atol=0.0)


def swin(with_cp: bool) -> MoPPASwin:
    torch.manual_seed(0)
    backbone = MoPPASwin(**TINY_SWIN, with_cp=with_cp)
    perturb(backbone)
    return backbone.train()


def test_swin_with_checkpointing_at_an_odd_size_gives_the_same_gradients():
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(2))
    results = []
    for with_cp in (False, True):
        backbone = swin(with_cp)
        outputs = backbone(x)
        loss = sum(o.square().mean() for o in outputs) + backbone.auxiliary_losses()['loss_route']
        loss.backward()
        results.append((outputs, dict(backbone.adapters.named_parameters())))
    (plain_out, plain), (cp_out, checkpointed) = results
    assert [tuple(o.shape[-2:]) for o in plain_out] == [(25, 33), (13, 17), (7, 9), (4, 5)]
    for a, b in zip(plain_out, cp_out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for name, param in plain.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name].grad, param.grad, rtol=1e-4, atol=1e-7)
