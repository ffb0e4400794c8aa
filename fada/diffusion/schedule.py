"""The SD1.5 noise schedule and the continuous-time ↔ train-index rule shared by every sampler.

Time ``t`` runs over [0, 1] with 1 = pure noise (PeRFlow's convention); train indices run over 0..T-1
(T = 1000) as in DDPM/diffusers. One rule links them (DESIGN §5, PeRFlow reference code):
``index(t) = max(round(T·t) − 1, 0)``, so t = 1 ↦ 999 and t = 0 ("clean") ↦ 0, i.e. ᾱ(0) = alphas_cumprod[0]
(not 1: SD1.5 uses ``set_alpha_to_one=False``). Every ᾱ lookup in this package goes through `ab_at_index`
so that a DDIM end index of −1 (diffusers' "past the last step") and t = 0 give the same ᾱ.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
BETA_SCHEDULE = "scaled_linear"


def make_alphas_cumprod(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    beta_start: float = BETA_START,
    beta_end: float = BETA_END,
    beta_schedule: str = BETA_SCHEDULE,
) -> Tensor:
    """ᾱ_i = ∏_{j≤i} (1 − β_j), float32, computed exactly as diffusers does (so values match bit for bit)."""
    if beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    else:
        raise ValueError(f"beta_schedule must be 'scaled_linear' or 'linear', got {beta_schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def sd15_alphas_cumprod() -> Tensor:
    """The SD1.5 schedule: 1000 steps, scaled-linear betas 0.00085 → 0.012."""
    return make_alphas_cumprod()


def t_to_index(t: Tensor | float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Tensor:
    """Continuous time t ∈ [0, 1] → train index max(round(T·t) − 1, 0), as a long tensor (DESIGN §5)."""
    t = torch.as_tensor(t)
    t = t if t.is_floating_point() else t.float()
    return (torch.round(t * num_train_timesteps).long() - 1).clamp(min=0)


def ab_at_index(index: Tensor | int, alphas_cumprod: Tensor) -> Tensor:
    """ᾱ at train index; negative indices (−1 = past the last DDIM step) read ᾱ[0], like diffusers'
    ``final_alpha_cumprod`` with ``set_alpha_to_one=False``."""
    index = torch.as_tensor(index, device=alphas_cumprod.device).long()
    return alphas_cumprod[index.clamp(min=0)]


def alpha_bar(t: Tensor | float, alphas_cumprod: Tensor) -> Tensor:
    """ᾱ(t) = alphas_cumprod[max(round(T·t) − 1, 0)] for t ∈ [0, 1] (scalar or any-shaped tensor)."""
    return ab_at_index(t_to_index(t, alphas_cumprod.shape[0]), alphas_cumprod)


def expand_as_batch(v: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or per-sample (B,) value shaped (B, 1, …, 1) to broadcast over x's trailing dims."""
    v = torch.as_tensor(v, device=x.device)
    if v.dim() == 0:
        return v
    if v.shape[0] != x.shape[0] or v.dim() != 1:
        raise ValueError(f"per-sample value of shape {tuple(v.shape)} does not match batch {x.shape[0]}")
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def per_sample(v: Tensor | float, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A scalar or (B,) value as a (B,) tensor on x's device: the timestep / mask argument of a model call."""
    v = torch.as_tensor(v, device=x.device, dtype=dtype)
    return v.expand(x.shape[0]) if v.dim() == 0 else v


def add_noise(x0: Tensor, eps: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """z = √ᾱ·x0 + √(1−ᾱ)·ε; ᾱ is a scalar or per-sample (B,). Result keeps x0's dtype."""
    ab = expand_as_batch(alpha_bar, x0).to(torch.float32)
    return (ab.sqrt() * x0 + (1 - ab).sqrt() * eps).to(x0.dtype)


def _ab_at_timesteps(timesteps: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """float32 ᾱ at model timestep inputs (train-index units, clamped to the schedule; linear between grid
    points, so integer timesteps read the grid and a fractional one, ``window_line_remap``'s, its neighbours)."""
    T = alphas_cumprod.shape[0]
    ac = alphas_cumprod.double()
    tau = torch.as_tensor(timesteps, device=ac.device).double().clamp(0, T - 1)
    lo = tau.floor().long().clamp(max=T - 2)
    frac = tau - lo
    return (ac[lo] * (1 - frac) + ac[lo + 1] * frac).to(torch.float32)


def linear_eps_prior(timesteps: Tensor, data_var: float, alphas_cumprod: Tensor) -> Tensor:
    """c(t) of the minimum-MSE *linear* estimate ε ≈ c(t)·z_t for x0 of zero mean and per-element variance
    ``data_var``: c(t) = √(1−ᾱ_t) / (ᾱ_t·data_var + 1 − ᾱ_t) (from z_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε).

    A small net that predicts only the residual ε − c(t)·z_t is exact at t → T from its first step (a plain UNet
    must first learn the identity there, and DDIM from pure noise amplifies that error 1/√ᾱ_T ≈ 15 times).
    ``timesteps`` are model timestep inputs (train-index units, see ``_ab_at_timesteps``)."""
    ab = _ab_at_timesteps(timesteps, alphas_cumprod)
    return (1 - ab).sqrt() / (ab * data_var + 1 - ab)


def precond_output_scale(timesteps: Tensor, data_var: float, alphas_cumprod: Tensor) -> Tensor:
    """κ(t) of the preconditioned ε output ε̂ = c(t)·z_t + κ(t)·F (c from ``linear_eps_prior``):
    κ(t) = √(ᾱ_t·data_var / (ᾱ_t·data_var + 1 − ᾱ_t)).

    This is EDM's preconditioning (Karras et al. 2022, Table 1: x̂0 = c_skip·x + c_out·F with σ = √(1−ᾱ)/√ᾱ)
    written for an ε-predicting net: the net's raw output F has unit-variance targets at every t, and near
    t = T, where ε is almost exactly c(t)·z_t, its errors are scaled down instead of being amplified 1/√ᾱ_T
    times into the DDIM estimate of x0."""
    ab = _ab_at_timesteps(timesteps, alphas_cumprod)
    return (ab * data_var / (ab * data_var + 1 - ab)).sqrt()


def precond_loss_weight(timesteps: Tensor, data_var: float, alphas_cumprod: Tensor) -> Tensor:
    """1/κ(t)²: the per-sample weight of Eq. 1's ε error that makes the loss uniform in the preconditioned net's
    raw output F (EDM's λ(σ) = 1/c_out²)."""
    return precond_output_scale(timesteps, data_var, alphas_cumprod).pow(-2)


def precondition_eps(z: Tensor, raw: Tensor, timesteps: Tensor, data_var: Tensor | float, alphas_cumprod: Tensor,
                     mean: Optional[Tensor] = None) -> Tensor:
    """The preconditioned ε output for a prior x0 ~ (μ, data_var) per element:
    ε̂ = c(t)·(z_t − √ᾱ_t·μ) + κ(t)·F, with c from ``linear_eps_prior`` and κ from ``precond_output_scale``.

    μ = 0 (``mean`` None) is EDM's zero-mean prior. A conditional mean (the reference frame's latents, for a
    net that draws a face it is given) makes the linear part alone the minimum-MSE linear denoiser of frames
    that differ from the reference by a residual of variance ``data_var``, so a from-scratch net starts out as
    a still copy of its reference and learns only what moves. ``data_var`` may be per sample (B,); ``mean`` is
    broadcast against z (B, C, F, h, w)."""
    B = z.shape[0]
    t = torch.as_tensor(timesteps, device=z.device, dtype=torch.float32).reshape(-1).expand(B)
    shape = (-1, *([1] * (z.dim() - 1)))
    var = torch.as_tensor(data_var, device=z.device, dtype=torch.float32).reshape(-1).expand(B)
    ab = _ab_at_timesteps(t, alphas_cumprod).to(z.device).view(shape)
    c = linear_eps_prior(t, var.to(alphas_cumprod.device), alphas_cumprod).to(z.device).view(shape)
    k = precond_output_scale(t, var.to(alphas_cumprod.device), alphas_cumprod).to(z.device).view(shape)
    base = z.float() if mean is None else z.float() - ab.sqrt() * mean.float()
    return (c * base + k * raw.float()).to(raw.dtype)


def sample_train_timesteps(batch: int, generator: torch.Generator, alphas_cumprod: Tensor, kind: str = "uniform",
                           lognormal_mean: float = -1.2, lognormal_std: float = 1.2) -> Tensor:
    """(B,) long train timesteps for the ε loss (Eq. 1). 'uniform': on 0..T−1. 'lognormal': ln σ ~ N(mean, std²)
    with σ = √(1−ᾱ)/√ᾱ the noise-to-signal ratio, mapped to the first timestep whose σ reaches it (clamped to the
    schedule's range)."""
    ac = alphas_cumprod.to(torch.float32)
    T, device = ac.shape[0], ac.device
    if kind == "uniform":
        return torch.randint(0, T, (batch,), generator=generator, device=device)
    if kind != "lognormal":
        raise ValueError(f"unknown timestep sampling {kind!r}")
    sigma = torch.exp(lognormal_mean + lognormal_std * torch.randn(batch, generator=generator, device=device))
    return torch.searchsorted(((1 - ac) / ac).sqrt().contiguous(), sigma).clamp(max=T - 1)
