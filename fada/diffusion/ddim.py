"""Deterministic DDIM (η = 0) as pure functions over an ε-predicting callable.

Samplers take an ``EpsFn``: ``eps_fn(z, t_index) -> eps`` with t_index a float tensor (B,) of train timesteps
and the conditioning closed over. `fada.diffusion.guidance.conditional` / `guided` turn a
``model_fn(z, t_index, keep_audio, keep_ref)`` into one; a plain ``fn(z, t)`` can be passed as is.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .schedule import NUM_TRAIN_TIMESTEPS, ab_at_index, expand_as_batch, per_sample

EpsFn = Callable[[Tensor, Tensor], Tensor]
# callback(i, t, z): after step i, z sits at time t (a train index here; t ∈ [0, 1] for PeRFlow).
Callback = Callable[[int, Tensor, Tensor], None]


def ddim_step(z: Tensor, eps: Tensor, ab_t: Tensor | float, ab_prev: Tensor | float) -> Tensor:
    """One DDIM (η = 0) step: x̂0 = (z − √(1−ᾱ_t)ε)/√ᾱ_t, z' = √ᾱ_prev·x̂0 + √(1−ᾱ_prev)·ε.

    ᾱ's are scalars or per-sample (B,); arithmetic runs in float32 (so fp16 latents do not lose the
    schedule's precision) and the result has z's dtype.
    """
    ab_t = expand_as_batch(ab_t, z).to(torch.float32)
    ab_prev = expand_as_batch(ab_prev, z).to(torch.float32)
    x0 = (z - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
    return (ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps).to(z.dtype)


def ddim_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, steps_offset: int = 1) -> Tensor:
    """Train indices of an n-step DDIM run, high to low: diffusers' ``DDIMScheduler.set_timesteps`` with the SD1.5
    config (timestep_spacing 'leading', steps_offset 1), e.g. 25 steps → 961, 921, …, 1."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps}, got {num_steps}")
    ratio = num_train_timesteps // num_steps
    return torch.arange(num_steps - 1, -1, -1, dtype=torch.long) * ratio + steps_offset


def sample_ddim(
    eps_fn: EpsFn,
    z: Tensor,
    num_steps: int,
    alphas_cumprod: Tensor,
    callback: Optional[Callback] = None,
) -> Tensor:
    """Full deterministic DDIM sampling from noise z (ᾱ ≈ ᾱ[999]) to the clean end (ᾱ[0]), same sequence as
    diffusers' DDIMScheduler: each step goes t → t − T//n, the last one to ᾱ[0]."""
    ac = alphas_cumprod.to(z.device)
    ts = ddim_timesteps(num_steps, ac.shape[0]).to(z.device)
    prev = torch.cat([ts[1:], ts.new_tensor([-1])])  # −1 ↦ ᾱ[0], diffusers' final_alpha_cumprod
    for i, (t, p) in enumerate(zip(ts, prev)):
        eps = eps_fn(z, per_sample(t, z, torch.float32))
        z = ddim_step(z, eps, ab_at_index(t, ac), ab_at_index(p, ac))
        if callback is not None:
            callback(i, p, z)
    return z


def solve_indices(start_index: Tensor | int, end_index: Tensor | int, n_steps: int) -> Tensor:
    """Train indices of n equal steps from start to end, rounded, shape (n+1, …); row 0 = start, row n = end
    exactly (end may be −1: "clean", read as ᾱ[0])."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be ≥ 1, got {n_steps}")
    s = torch.as_tensor(start_index).long()
    e = torch.as_tensor(end_index, device=s.device).long()
    k = torch.arange(n_steps + 1, device=s.device, dtype=torch.float64).reshape(-1, *([1] * max(s.dim(), e.dim())))
    idx = torch.round(s.double() + (e - s).double() * k / n_steps).long()
    idx[-1] = e  # exact landing regardless of float rounding
    return idx


def ddim_solve(
    eps_fn: EpsFn,
    z: Tensor,
    start_index: Tensor | int,
    end_index: Tensor | int,
    n_steps: int,
    alphas_cumprod: Tensor,
) -> Tensor:
    """Deterministic DDIM from train index start to end in n equal steps, landing exactly on ᾱ[end] (Eq. 2, the ODE
    solver Φ inside a PeRFlow window). start/end: ints or per-sample (B,) tensors; end −1 or 0 both mean ᾱ[0]."""
    ac = alphas_cumprod.to(z.device)
    idx = solve_indices(start_index, end_index, n_steps).to(z.device)
    for k in range(n_steps):
        cur, nxt = idx[k], idx[k + 1]
        eps = eps_fn(z, per_sample(cur, z, torch.float32))
        z = ddim_step(z, eps, ab_at_index(cur, ac), ab_at_index(nxt, ac))
    return z
