"""Properties of the DCT and of the heat / wave / Poisson spectral filters (METHOD.md)."""
import math

import numpy as np
import pytest
import scipy.fft
import torch

from moppa_det.ops import (
    PhysicalPriors,
    dct2,
    dct_matrix,
    heat_gain,
    idct2,
    laplacian_eigenvalues,
    poisson_gain,
    wave_gain,
)


def reference_filter(x: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Slow reference: scipy's orthonormal DCT-II, a float64 gain, scipy's inverse."""
    spectrum = scipy.fft.dctn(x, axes=(-2, -1), norm='ortho')
    return scipy.fft.idctn(spectrum * gain, axes=(-2, -1), norm='ortho')


def reference_resize(source: np.ndarray, h: int, w: int, mode: str) -> np.ndarray:
    """Slow reference of a half-pixel (align_corners=False) bilinear or bicubic resize: separable
    1-D interpolation, edges clamped, cubic kernel with a = -0.75 (torch's, OpenCV's)."""
    def weights(out_size: int, in_size: int) -> np.ndarray:
        matrix = np.zeros((out_size, in_size))
        for i in range(out_size):
            x = (i + 0.5) * in_size / out_size - 0.5
            if mode == 'bilinear':
                x = max(x, 0.0)  # torch clamps the source coordinate below only
                left = min(int(np.floor(x)), in_size - 1)
                frac = x - left
                matrix[i, left] += 1 - frac
                matrix[i, min(left + 1, in_size - 1)] += frac
                continue
            left = int(np.floor(x))
            for tap in range(left - 1, left + 3):
                d, a = abs(x - tap), -0.75
                k = ((a + 2) * d ** 3 - (a + 3) * d ** 2 + 1 if d <= 1
                     else a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a if d < 2 else 0.0)
                matrix[i, min(max(tap, 0), in_size - 1)] += k
        return matrix

    return weights(h, source.shape[0]) @ source @ weights(w, source.shape[1]).T


def reference_lambda(h: int, w: int) -> np.ndarray:
    return (np.pi * np.arange(h) / h)[:, None] ** 2 + (np.pi * np.arange(w) / w)[None, :] ** 2


@pytest.mark.parametrize('shape', [(1, 1, 1, 1), (2, 3, 7, 9), (1, 4, 16, 16), (2, 2, 25, 38)])
def test_dct_matches_scipy_and_inverts(shape):
    x = torch.randn(shape, dtype=torch.float64)
    expected = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm='ortho')
    np.testing.assert_allclose(dct2(x).numpy(), expected, atol=1e-12)
    torch.testing.assert_close(idct2(dct2(x)), x, atol=1e-12, rtol=0)
    x32 = x.float()
    torch.testing.assert_close(idct2(dct2(x32)), x32, atol=1e-5, rtol=0)


def test_dct_matrix_is_orthogonal_and_cached():
    basis = dct_matrix(37, torch.device('cpu'), torch.float32)
    torch.testing.assert_close(basis @ basis.T, torch.eye(37), atol=1e-6, rtol=0)
    assert dct_matrix(37, torch.device('cpu'), torch.float32) is basis
    info = dct_matrix.cache_info()
    assert info.maxsize is not None and info.maxsize >= 16, 'cache must be bounded'
    for n in range(1, info.maxsize + 10):
        dct_matrix(n, torch.device('cpu'), torch.float32)
    assert dct_matrix.cache_info().currsize <= info.maxsize


def test_laplacian_eigenvalues():
    lam = laplacian_eigenvalues(5, 8, torch.device('cpu'))
    np.testing.assert_allclose(lam.numpy(), reference_lambda(5, 8), rtol=1e-6)
    assert lam[0, 0] == 0


def test_zero_time_heat_and_wave_are_identity():
    lam = laplacian_eigenvalues(6, 7, torch.device('cpu'))
    zero = torch.zeros(3)
    assert torch.equal(heat_gain(lam, zero), torch.ones(3, 6, 7))
    assert torch.equal(wave_gain(lam, zero), torch.ones(3, 6, 7))


@pytest.mark.parametrize('poisson, source_resize', [('screened', 'bilinear'),
                                                    ('literal', 'bicubic')])
def test_priors_agree_with_scipy_reference(poisson, source_resize):
    torch.manual_seed(0)
    priors = PhysicalPriors(4, poisson=poisson, source_size=(5, 5), source_resize=source_resize)
    with torch.no_grad():
        priors.raw_k.normal_()
        priors.raw_c.normal_()
        priors.raw_t.normal_()
        priors.source.uniform_(0.5, 1.5)
    z = torch.randn(2, 4, 12, 10)
    out = idct2(priors(z)).detach().numpy().astype(np.float64)

    times = {k: v.detach().double().numpy() for k, v in priors.diffusion_times().items()}
    lam = reference_lambda(12, 10)
    heat = np.exp(-times['kt'][:, None, None] * lam)
    wave = np.cos(times['ct'][:, None, None] * np.sqrt(lam))
    if poisson == 'screened':
        mu = (np.pi / 12) ** 2
        pois = mu / (lam + mu)
    else:
        pois = 1.0 / np.where(lam == 0, 1.0, lam)
    source = reference_resize(priors.source.detach().double().numpy(), 12, 10, source_resize)
    zn = z.double().numpy()
    np.testing.assert_allclose(out[:, 0], reference_filter(zn, heat), atol=1e-5)
    np.testing.assert_allclose(out[:, 1], reference_filter(zn, wave), atol=1e-5)
    np.testing.assert_allclose(out[:, 2], reference_filter(zn * source, pois), atol=1e-5)


def test_constant_map_is_fixed_point():
    priors = PhysicalPriors(3)
    with torch.no_grad():
        priors.raw_k.normal_()
        priors.raw_c.normal_()
    z = torch.full((1, 3, 9, 11), 2.5)
    out = idct2(priors(z)).detach()
    for index in range(3):
        torch.testing.assert_close(out[:, index], z, atol=1e-5, rtol=0)


def test_heat_is_a_semigroup_and_low_pass():
    lam = laplacian_eigenvalues(8, 8, torch.device('cpu'))
    a, b = torch.tensor([0.3]), torch.tensor([0.7])
    torch.testing.assert_close(heat_gain(lam, a) * heat_gain(lam, b), heat_gain(lam, a + b))
    gain = heat_gain(lam, a)[0]
    assert gain[0, 0] == 1 and (gain[1:, 1:] < 1).all()


def test_wave_gain_against_hand_values():
    """cos(c t sqrt(lambda)) at chosen modes: sqrt(lambda(0, 1)) = pi / 8 on an 8 x 8 grid, so
    c t = 2 turns it by pi / 4, c t = 8 by pi (sign flip), and mode (1, 1) by pi * sqrt(2)."""
    lam = laplacian_eigenvalues(8, 8, torch.device('cpu'))
    gain = wave_gain(lam, torch.tensor([2.0, 8.0]))
    expected = torch.tensor([[1.0, math.cos(math.pi / 4), math.cos(math.pi * math.sqrt(2) / 4)],
                             [1.0, -1.0, math.cos(math.pi * math.sqrt(2))]])
    actual = torch.stack([gain[:, 0, 0], gain[:, 0, 1], gain[:, 1, 1]], dim=1)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    assert torch.equal(gain[:, 0, 1], gain[:, 1, 0])  # square grid: symmetric in n and m


def test_screened_poisson_has_unit_dc_gain_and_decays():
    gain = poisson_gain(laplacian_eigenvalues(10, 20, torch.device('cpu')))
    assert gain[0, 0] == 1
    assert gain[9, 19] < gain[1, 0] < 1
    torch.testing.assert_close(gain[0, 1], torch.tensor(0.5))  # lambda == mu at the lowest mode


def test_initial_times_follow_config():
    priors = PhysicalPriors(2, init_kt=0.1, init_ct=0.5, init_t=1.0)
    times = priors.diffusion_times()
    torch.testing.assert_close(times['kt'], torch.full((2,), 0.1))
    torch.testing.assert_close(times['ct'], torch.full((2,), 0.5))


def test_source_map_resizes_and_receives_gradient():
    priors = PhysicalPriors(2, priors=('poisson',), source_size=(14, 14))
    assert priors.source_map(20, 31).shape == (20, 31)
    torch.testing.assert_close(priors.source_map(20, 31), torch.ones(20, 31))
    priors(torch.randn(1, 2, 20, 31)).square().sum().backward()
    assert priors.source.grad is not None and priors.source.grad.abs().sum() > 0
    assert priors.raw_k is None and priors.raw_t is None


def test_additive_source_starts_at_zero():
    priors = PhysicalPriors(2, priors=('poisson',), source='add')
    z = torch.randn(1, 2, 6, 6)
    expected = idct2(PhysicalPriors(2, priors=('poisson',))(z))
    torch.testing.assert_close(idct2(priors(z)), expected)
    assert math.isclose(priors.source.abs().sum().item(), 0.0)


def test_bases_first_built_under_inference_mode_still_train():
    from moppa_det.ops import clear_cache
    clear_cache()
    priors = PhysicalPriors(2, source_size=(3, 3))
    with torch.inference_mode():
        priors(torch.randn(1, 2, 11, 13))
    priors(torch.randn(1, 2, 11, 13)).sum().backward()
    assert priors.raw_t.grad is not None
