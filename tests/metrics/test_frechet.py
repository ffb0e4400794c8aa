"""Known answers for the shared Fréchet distance."""

import numpy as np
import pytest
import scipy.linalg

from fada.errors import FadaError
from fada.metrics.frechet import frechet_distance, frechet_from_features, gaussian_stats, trace_sqrt_product


def _random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.linspace(1.0, cond, d)) @ q.T


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).standard_normal((50, 8))
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-9)


def test_identical_rank_deficient_sets_give_zero():
    # fewer samples than dimensions: singular covariances, still exactly 0 up to round-off
    x = np.random.default_rng(1).standard_normal((10, 64)) * 3.0
    _, s = gaussian_stats(x)
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-6 * np.trace(s))


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.5), (3.0, 0.0, 1.0, 4.0)])
def test_one_dimensional_closed_form(m1, s1, m2, s2):
    # N(m1, s1²) vs N(m2, s2²): (m1 - m2)² + (s1 - s2)²
    d = frechet_distance([m1], [[s1 ** 2]], [m2], [[s2 ** 2]])
    assert d == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-10, abs=1e-12)


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(2)
    v1, v2 = rng.uniform(0.1, 5, 6), rng.uniform(0.1, 5, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expect, rel=1e-10)


def test_commuting_covariances_closed_form():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a, b = rng.uniform(0.2, 3, 5), rng.uniform(0.2, 3, 5)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expect = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expect, rel=1e-9)


def test_mean_shift_only():
    x = np.random.default_rng(4).standard_normal((40, 7))
    shift = np.arange(7) * 0.3
    assert frechet_from_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_symmetry_and_scipy_sqrtm_agreement():
    rng = np.random.default_rng(5)
    s1, s2 = _random_spd(rng, 12), _random_spd(rng, 12, cond=5.0)
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
    d12 = frechet_distance(mu1, s1, mu2, s2)
    assert d12 == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)
    ref = np.real(scipy.linalg.sqrtm(s1 @ s2))
    expect = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(ref)
    assert d12 == pytest.approx(expect, rel=1e-8)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(ref), rel=1e-10)


def test_fewer_samples_than_dimensions_is_finite_and_nonnegative():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((5, 32)), rng.standard_normal((7, 32)) + 0.5
    d = frechet_from_features(a, b)
    assert np.isfinite(d) and d > 0
    assert d == pytest.approx(frechet_from_features(b, a), rel=1e-8)


def test_float64_and_no_complex():
    a = np.random.default_rng(7).standard_normal((30, 4)).astype(np.float32)
    d = frechet_from_features(a, a * 2.0)
    assert isinstance(d, float)
    # same covariance shape scaled by 4: d = tr(S) + 4 tr(S) - 2*2 tr(S) = tr(S), means scaled too
    mu, s = gaussian_stats(a.astype(np.float64))
    assert d == pytest.approx(float(mu @ mu) + np.trace(s), rel=1e-8)


def test_errors_are_one_line_fada_errors():
    with pytest.raises(FadaError, match="at least 2 samples"):
        frechet_from_features(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(FadaError, match="dimensions differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(FadaError, match="NaN"):
        frechet_from_features(np.full((3, 2), np.nan), np.zeros((3, 2)))
