"""The Fréchet distance between two Gaussians, shared by FID, FVD and E-FID.

    d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr( (S1 S2)^(1/2) )

``tr((S1 S2)^(1/2))`` is computed without a general (complex) matrix square root: S1 S2 is similar to the symmetric
positive semi-definite matrix ``A = S1^(1/2) S2 S1^(1/2)`` (``S1^(1/2) S2 S1^(1/2) = S1^(-1/2) (S1 S2) S1^(1/2)``
when S1 is invertible, and by continuity otherwise), so both have the same eigenvalues and the trace we need is
``sum(sqrt(eig(A)))``. Everything uses ``numpy.linalg.eigh`` on symmetric matrices in float64, tiny negative
eigenvalues from round-off are clipped to 0, and no complex numbers appear. This is exact for rank-deficient
covariances too (fewer samples than dimensions), where ``scipy.linalg.sqrtm(S1 @ S2)`` is unstable.
"""

from __future__ import annotations

import numpy as np

from fada.errors import FadaError


def _sym(m: np.ndarray) -> np.ndarray:
    return 0.5 * (m + m.T)


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    w, v = np.linalg.eigh(_sym(np.asarray(s, dtype=np.float64)))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, via the symmetric form sqrt(S1) S2 sqrt(S1)."""
    r = psd_sqrt(s1)
    w = np.linalg.eigvalsh(_sym(r @ np.asarray(s2, dtype=np.float64) @ r))
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def _as_stats(mu, sigma, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise FadaError(f"{name}: mean must be a vector, got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise FadaError(f"{name}: covariance shape {sigma.shape} does not match mean length {mu.shape[0]}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FadaError(f"{name}: statistics contain NaN or infinity")
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64, >= 0)."""
    mu1, sigma1 = _as_stats(mu1, sigma1, "first set")
    mu2, sigma2 = _as_stats(mu2, sigma2, "second set")
    if mu1.shape != mu2.shape:
        raise FadaError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))
    # The exact value is >= 0; round-off can leave a tiny negative number when the sets coincide.
    return max(d, 0.0)


def gaussian_stats(features, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples; unbiased with ``ddof`` 1, divided by N with 0) of an (N, D)
    feature matrix, float64; N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise FadaError(f"features must be (N, D), got shape {x.shape}")
    if x.shape[0] < 2:
        raise FadaError(f"a Fréchet distance needs at least 2 samples per set, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise FadaError("features contain NaN or infinity")
    mu = x.mean(axis=0)
    sigma = np.atleast_2d(np.cov(x, rowvar=False, ddof=ddof))
    return mu, sigma


def frechet_from_features(a, b, ddof: int = 1) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    mu1, s1 = gaussian_stats(a, ddof)
    mu2, s2 = gaussian_stats(b, ddof)
    return frechet_distance(mu1, s1, mu2, s2)
