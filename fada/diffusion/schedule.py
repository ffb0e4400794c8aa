"""Schedule helpers over a `NoiseSchedule`: broadcasting, noising, the CPU-scale preconditioning, train timesteps.

ᾱ, the time ↔ index rule and the output parametrisation live in `fada.diffusion.noise_schedule`; everything here
takes the schedule so that an ε/SD1.5 model and a v/zero-SNR one (Hallo's) go through the same code.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .noise_schedule import NoiseSchedule, expand_as_batch  # noqa: F401 (expand_as_batch: re-exported)

NUM_TRAIN_TIMESTEPS = 1000


def per_sample(v: Tensor | float, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A scalar or (B,) value as a (B,) tensor on x's device: the timestep / mask argument of a model call."""
    v = torch.as_tensor(v, device=x.device, dtype=dtype)
    return v.expand(x.shape[0]) if v.dim() == 0 else v


def add_noise(x0: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """z = √ᾱ·x0 + √(1−ᾱ)·ε; ᾱ is a scalar or per-sample (B,). Result keeps x0's dtype."""
    ab = expand_as_batch(alpha_bar, x0).to(torch.float32)
    return (ab.sqrt() * x0 + (1 - ab).sqrt() * eps).to(x0.dtype)


def linear_eps_prior(timesteps: Tensor, data_var: float, schedule: NoiseSchedule) -> Tensor:
    """c(t) of the minimum-MSE *linear* estimate ε ≈ c(t)·z_t for x0 of zero mean and per-element variance
    ``data_var``: c(t) = √(1−ᾱ_t) / (ᾱ_t·data_var + 1 − ᾱ_t) (from z_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε).

    A small net that predicts only the residual ε − c(t)·z_t is exact at t → T from its first step (a plain UNet
    must first learn the identity there, and DDIM from pure noise amplifies that error 1/√ᾱ_T ≈ 15 times).
    ``timesteps`` are model timestep inputs (train-index units, ``NoiseSchedule.ab_at_timesteps``)."""
    ab = schedule.ab_at_timesteps(timesteps)
    return (1 - ab).sqrt() / (ab * data_var + 1 - ab)


def precond_output_scale(timesteps: Tensor, data_var: float, schedule: NoiseSchedule) -> Tensor:
    """κ(t) of the preconditioned ε output ε̂ = c(t)·z_t + κ(t)·F (c from ``linear_eps_prior``):
    κ(t) = √(ᾱ_t·data_var / (ᾱ_t·data_var + 1 − ᾱ_t)).

    This is EDM's preconditioning (Karras et al. 2022, Table 1: x̂0 = c_skip·x + c_out·F with σ = √(1−ᾱ)/√ᾱ)
    written for an ε-predicting net: the net's raw output F has unit-variance targets at every t, and near
    t = T, where ε is almost exactly c(t)·z_t, its errors are scaled down instead of being amplified 1/√ᾱ_T
    times into the DDIM estimate of x0."""
    ab = schedule.ab_at_timesteps(timesteps)
    return (ab * data_var / (ab * data_var + 1 - ab)).sqrt()


def precond_loss_weight(timesteps: Tensor, data_var: float, schedule: NoiseSchedule) -> Tensor:
    """1/(∂o/∂F)²: the per-sample weight of the output error (Eq. 1) that makes the loss uniform in the
    preconditioned net's raw output F (EDM's λ(σ) = 1/c_out²). ε: 1/κ(t)²; v: (ᾱ·var + 1 − ᾱ)/var
    (``precondition``)."""
    if schedule.prediction_type == "epsilon":
        return precond_output_scale(timesteps, data_var, schedule).pow(-2)
    ab = schedule.ab_at_timesteps(timesteps)
    return (ab * data_var + 1 - ab) / data_var


def precondition(z: Tensor, raw: Tensor, timesteps: Tensor, data_var: Tensor | float, schedule: NoiseSchedule,
                 mean: Optional[Tensor] = None) -> Tensor:
    """The preconditioned net output, in the schedule's parametrisation, for a prior x0 ~ (μ, data_var) per element.

    ε: ε̂ = c(t)·(z_t − √ᾱ_t·μ) + κ(t)·F, with c from ``linear_eps_prior`` and κ from ``precond_output_scale``.
    v: the same x̂0 (the minimum-MSE linear x̂0 = μ + √ᾱ·var·(z − √ᾱμ)/D, D = ᾱ·var + 1 − ᾱ, minus the residual
    √((1−ᾱ)·var/D)·F) written as v̂ = (√ᾱ·z − x̂0)/√(1−ᾱ) = √(1−ᾱ)·(√ᾱ·(1 − var)·(z − √ᾱμ)/D − μ) + √(var/D)·F,
    which stays defined at ᾱ = 0 (v̂ = −μ + √var·F).

    μ = 0 (``mean`` None) is EDM's zero-mean prior. A conditional mean (the reference frame's latents, for a
    net that draws a face it is given) makes the linear part alone the minimum-MSE linear denoiser of frames
    that differ from the reference by a residual of variance ``data_var``, so a from-scratch net starts out as
    a still copy of its reference and learns only what moves. ``data_var`` may be per sample (B,); ``mean`` is
    broadcast against z (B, C, F, h, w)."""
    B = z.shape[0]
    t = torch.as_tensor(timesteps, device=z.device, dtype=torch.float32).reshape(-1).expand(B)
    shape = (-1, *([1] * (z.dim() - 1)))
    var = torch.as_tensor(data_var, device=z.device, dtype=torch.float32).reshape(-1).expand(B)
    ab = schedule.ab_at_timesteps(t).to(z.device).view(shape)
    base = z.float() if mean is None else z.float() - ab.sqrt() * mean.float()
    if schedule.prediction_type == "epsilon":
        c = linear_eps_prior(t, var, schedule).to(z.device).view(shape)
        k = precond_output_scale(t, var, schedule).to(z.device).view(shape)
        return (c * base + k * raw.float()).to(raw.dtype)
    v = var.view(shape)
    d = ab * v + 1 - ab
    mu = 0.0 if mean is None else mean.float()
    lin = (1 - ab).sqrt() * (ab.sqrt() * (1 - v) * base / d - mu)
    return (lin + (v / d).sqrt() * raw.float()).to(raw.dtype)


def sample_train_timesteps(batch: int, generator: torch.Generator, schedule: NoiseSchedule, kind: str = "uniform",
                           lognormal_mean: float = -1.2, lognormal_std: float = 1.2) -> Tensor:
    """(B,) long train timesteps for the ε loss (Eq. 1). 'uniform': on 0..T−1. 'lognormal': ln σ ~ N(mean, std²)
    with σ = √(1−ᾱ)/√ᾱ the noise-to-signal ratio, mapped to the first timestep whose σ reaches it (clamped to the
    schedule's range)."""
    ac = schedule.alphas_cumprod
    T, device = ac.shape[0], ac.device
    if kind == "uniform":
        return torch.randint(0, T, (batch,), generator=generator, device=device)
    if kind != "lognormal":
        raise ValueError(f"unknown timestep sampling {kind!r}")
    sigma = torch.exp(lognormal_mean + lognormal_std * torch.randn(batch, generator=generator, device=device))
    return torch.searchsorted(((1 - ac) / ac).sqrt().contiguous(), sigma).clamp(max=T - 1)
