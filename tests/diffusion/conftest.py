import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def sched():
    """Stable Diffusion 1.5's schedule (ε, scaled-linear, leading)."""
    from fada.diffusion import NoiseSchedule

    return NoiseSchedule()


@pytest.fixture(scope="session")
def ac(sched):
    return sched.alphas_cumprod


@pytest.fixture(scope="session")
def ac_np():
    """SD1.5 ᾱ re-derived in float64 numpy, independently of the package and of diffusers."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
