"""Spectral adapters see each image's own valid grid, not the batch padding (METHOD.md, Padding)."""
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SWIN, TINY_VIT

from moppa_det.models.backbones import MoPPASwin, MoPPAViT
from moppa_det.ops import apply_within, valid_mask


def perturbed_moppa(backbone, **_):
    with torch.no_grad():
        for unit in backbone.adapters['moppa'].units.values():
            unit.up.weight.normal_(std=0.5)
            unit.router.proj.weight.normal_(std=0.5)
            unit.priors.source.normal_(1.0, 0.5)
            unit.priors.raw_t.add_(1.0)  # longer diffusion: padding would matter more
    return backbone


def test_apply_within_batches_by_size_and_keeps_padding():
    x = torch.randn(3, 6, 7, 2)
    calls = []

    def double(crop):
        calls.append(tuple(crop.shape))
        return crop * 2
    y = apply_within(x, [(4, 7), (6, 3), (4, 7)], double)
    assert sorted(calls) == [(1, 6, 3, 2), (2, 4, 7, 2)]  # one call per valid size
    mask = valid_mask([(4, 7), (6, 3), (4, 7)], 3, (6, 7))
    torch.testing.assert_close(y[mask], x[mask] * 2)
    torch.testing.assert_close(y[~mask], x[~mask])
    assert apply_within(x, [(6, 7)] * 3, double).equal(x * 2)  # all valid: one call, no crop


@pytest.mark.parametrize('router', ['token', 'sample'])
@pytest.mark.parametrize('placement', ['after_norm', 'before_norm'])
def test_moppa_update_of_an_image_ignores_its_batch_mates(router, placement):
    backbone = perturbed_moppa(MoPPAViT(**TINY_VIT, adapter=dict(
        type='MoPPA', router=router, placement=placement)))
    adapter, site = backbone.adapters['moppa'], backbone.sites()[0]
    landscape, portrait = torch.randn(1, 5, 8, 32), torch.randn(1, 8, 5, 32)
    alone = adapter.adapt_map(site, landscape, None)
    canvas = torch.zeros(2, 8, 8, 32)
    canvas[0, :5, :8], canvas[1, :8, :5] = landscape[0], portrait[0]
    batched = adapter.adapt_map(site, canvas, [(5, 8), (8, 5)])
    torch.testing.assert_close(batched[0, :5, :8], alone[0], atol=1e-5, rtol=1e-5)
    assert batched[0, 5:].equal(canvas[0, 5:]) and batched[1, :, 5:].equal(canvas[1, :, 5:])
    # The check can fail: over the padded canvas the same image gets another update.
    padded = adapter.adapt_map(site, canvas, None)
    assert (padded[0, :5, :8] - alone[0]).abs().max() > 1e-3


def test_route_statistics_average_valid_tokens_only():
    backbone = perturbed_moppa(MoPPAViT(**TINY_VIT))
    adapter, site = backbone.adapters['moppa'], backbone.sites()[0]
    images = torch.randn(2, 5, 8, 32)
    adapter.adapt_map(site, images, None)
    unpadded = adapter.records['0']['mean_alpha']
    canvas = torch.randn(2, 8, 9, 32)  # padding that is not even zero
    canvas[:, :5, :8] = images
    adapter.adapt_map(site, canvas, [(5, 8), (5, 8)])
    torch.testing.assert_close(adapter.records['0']['mean_alpha'], unpadded)
    adapter.adapt_map(site, canvas, None)
    assert not torch.allclose(adapter.records['0']['mean_alpha'], unpadded)


def norm1_updates(backbone):
    """Records, per block, |adapter output - plain norm1 output| as a (B, H, W) map."""
    updates = {}

    def recorder(index):
        def hook(module, args, output):
            plain = F.layer_norm(args[0], module.normalized_shape, module.weight, module.bias,
                                 module.eps)
            change = (output - plain).abs().sum(-1)
            if change.dim() == 2:  # ViT tokens: drop the prefix, back to the grid
                change = change[:, backbone.model.num_prefix_tokens:].reshape(
                    change.shape[0], *backbone._grid)
            updates[index] = change.detach()
        return hook
    for site in backbone.sites():
        site.norm1.register_forward_hook(recorder(site.index))
    return updates


@pytest.mark.parametrize('factory, stride', [
    (lambda cp: MoPPAViT(**TINY_VIT, feature_stride=16, with_cp=cp), 16),
    (lambda cp: MoPPASwin(**TINY_SWIN, with_cp=cp), None),
])
@pytest.mark.parametrize('with_cp', [False, True])
def test_backbone_hands_each_image_its_valid_grid(factory, stride, with_cp):
    backbone = perturbed_moppa(factory(with_cp)).train()
    updates = norm1_updates(backbone)
    x = torch.randn(2, 3, 96, 96)
    sizes = [(64, 96), (96, 40)]
    backbone.set_image_sizes(sizes)
    sum(o.sum() for o in backbone(x)).backward()  # with_cp recomputes under the same grids
    for site in backbone.sites():
        change = updates[site.index]
        grids = [(-(-h // site.stride), -(-w // site.stride)) for h, w in sizes]
        mask = valid_mask(grids, 2, tuple(change.shape[1:]))
        assert change[~mask].max() == 0, site.index  # no update on the padding
        assert change[mask].min() > 0, site.index
    backbone(x)  # the sizes were for one forward only: now all of it is valid
    assert all(change.min() > 0 for change in updates.values())
    backbone.per_image_grids = False  # the comparison option: the padded canvas, as before
    backbone.set_image_sizes(sizes)
    backbone(x)
    assert all(change.min() > 0 for change in updates.values())


def test_image_sizes_must_match_the_batch():
    backbone = MoPPAViT(**TINY_VIT)
    backbone.set_image_sizes([(56, 56)])
    with pytest.raises(ValueError, match='1 image sizes given for a batch of 2'):
        backbone(torch.randn(2, 3, 56, 56))
