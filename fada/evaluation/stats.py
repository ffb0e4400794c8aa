"""Streaming Gaussian statistics for the Fréchet metrics (FID, FVD, E-FID) and a fast exact distance for small sets.

``RunningGaussian.update(batch)`` merges a batch with Chan et al.'s pairwise update of the mean and the centred
second-moment matrix (numerically safe in float64, unlike a sum of squares), so after any split of the rows into
batches ``mean`` and ``cov`` equal ``numpy.mean`` / ``numpy.cov(rowvar=False)`` of all rows. While a set has fewer
rows than dimensions (FVD over a 100-video test set: 100 rows of 2048) the rows are kept too.

``frechet_running(a, b)`` is the Fréchet distance of ``fada.metrics.frechet``. The costly term is
tr((S1 S2)^(1/2)), a d x d eigen-decomposition (seconds for d = 2048). When a set has n < d rows, its covariance is
S1 = Aᵀ A / (n - ddof) with A the centred rows, and S1 S2 has the same non-zero eigenvalues as the n x n PSD
matrix A S2 Aᵀ / (n - ddof), so the trace is the sum of the square roots of *its* eigenvalues -- exact, and O(n d²) instead of
O(d³). Otherwise the general routine runs.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fada.errors import FadaError
from fada.metrics.frechet import frechet_distance


class RunningGaussian:
    """Mean and covariance of the rows seen so far (float64; unbiased with ``ddof`` 1, the default, divided by n
    with 0, as StyleGAN-V's FVD); the rows themselves while n <= dim."""

    def __init__(self, dim: Optional[int] = None, ddof: int = 1):
        self.n = 0
        self.dim = dim
        self.ddof = int(ddof)
        self._mean: Optional[np.ndarray] = None
        self._m2: Optional[np.ndarray] = None  # sum of outer products of deviations from the mean
        self._rows: Optional[list[np.ndarray]] = []

    def update(self, rows) -> "RunningGaussian":
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise FadaError(f"features must be (N, D), got shape {x.shape}")
        if x.shape[0] == 0:
            return self
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise FadaError(f"feature dimension changed: {x.shape[1]} vs {self.dim}")
        if not np.isfinite(x).all():
            raise FadaError("features contain NaN or infinity")
        nb = x.shape[0]
        mb = x.mean(axis=0)
        d = x - mb
        m2b = d.T @ d
        if self.n == 0:
            self._mean, self._m2 = mb, m2b
        else:
            n = self.n + nb
            delta = mb - self._mean
            self._mean = self._mean + delta * (nb / n)
            self._m2 = self._m2 + m2b + np.outer(delta, delta) * (self.n * nb / n)
        self.n += nb
        if self._rows is not None:
            self._rows.append(x)
            if self.n > self.dim:
                self._rows = None
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.n == 0:
            raise FadaError("no samples")
        return self._mean

    @property
    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise FadaError(f"a covariance needs at least 2 samples, got {self.n}")
        return self._m2 / (self.n - self.ddof)

    @property
    def rows(self) -> Optional[np.ndarray]:
        """All rows (n, d) while n <= dim, else None."""
        return np.concatenate(self._rows, 0) if self._rows else None


def frechet_running(a: RunningGaussian, b: RunningGaussian) -> float:
    """Fréchet distance between the Gaussians of two sets (each with >= 2 rows); see the module docstring."""
    for g, side in ((a, "first"), (b, "second")):
        if g.n < 2:
            raise FadaError(f"a Fréchet distance needs at least 2 samples per set, got {g.n} in the {side}")
    if a.dim != b.dim:
        raise FadaError(f"feature dimensions differ: {a.dim} vs {b.dim}")
    low = [g for g in (a, b) if g.rows is not None]
    if not low:
        return frechet_distance(a.mean, a.cov, b.mean, b.cov)
    small = min(low, key=lambda g: g.n)
    other = b if small is a else a
    A = small.rows - small.mean
    if other.rows is not None:
        B = other.rows - other.mean
        C = A @ B.T
        K = (C @ C.T) / ((small.n - small.ddof) * (other.n - other.ddof))
        tr_other = float((B * B).sum() / (other.n - other.ddof))
    else:
        S = other.cov
        K = (A @ S @ A.T) / (small.n - small.ddof)
        tr_other = float(np.trace(S))
    w = np.linalg.eigvalsh(0.5 * (K + K.T))
    tr_sqrt = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    tr_small = float((A * A).sum() / (small.n - small.ddof))
    diff = a.mean - b.mean
    return max(float(diff @ diff) + tr_small + tr_other - 2.0 * tr_sqrt, 0.0)
