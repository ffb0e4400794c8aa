"""Deterministic DDIM (η = 0) as pure functions over a net callable and a `NoiseSchedule`.

Samplers take an ``EpsFn``: ``eps_fn(z, t_index) -> output`` with t_index a float tensor (B,) of train timesteps
and the conditioning closed over; the output is what the net predicts (ε or v, ``NoiseSchedule.prediction_type``),
which the schedule turns into x̂0 and ε̂. `fada.diffusion.guidance.conditional` / `guided` turn a
``model_fn(z, t_index, keep_audio, keep_ref)`` into one; a plain ``fn(z, t)`` can be passed as is.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .noise_schedule import NoiseSchedule
from .schedule import per_sample

EpsFn = Callable[[Tensor, Tensor], Tensor]
# callback(i, t, z): after step i, z sits at time t (a train index here; t ∈ [0, 1] for PeRFlow).
Callback = Callable[[int, Tensor, Tensor], None]


def sample_ddim(
    eps_fn: EpsFn,
    z: Tensor,
    num_steps: int,
    schedule: NoiseSchedule,
    callback: Optional[Callback] = None,
) -> Tensor:
    """Full deterministic DDIM sampling from noise z to the clean end on the schedule's grid, step for step
    diffusers' ``DDIMScheduler`` with the same config (``NoiseSchedule.ddim_timesteps``)."""
    ts, ends = schedule.ddim_timesteps(num_steps)
    for i, (t, p) in enumerate(zip(ts.tolist(), ends.tolist())):
        out = eps_fn(z, per_sample(float(t), z, torch.float32))
        z = schedule.ddim_step(z, out, schedule.ab(t), schedule.ab(p))
        if callback is not None:
            callback(i, torch.tensor(p), z)
    return z


def solve_indices(start_index: Tensor | int, end_index: Tensor | int, n_steps: int) -> Tensor:
    """Train indices of n equal steps from start to end, rounded, shape (n+1, …); row 0 = start, row n = end
    exactly (end may be −1: the clean end)."""
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
    schedule: NoiseSchedule,
) -> Tensor:
    """Deterministic DDIM from train index start to end in n equal steps, landing exactly on ᾱ[end] (Eq. 2, the ODE
    solver Φ inside a PeRFlow window). start/end: ints or per-sample (B,) tensors; end −1 is the clean end."""
    idx = solve_indices(start_index, end_index, n_steps).to(z.device)
    for k in range(n_steps):
        cur, nxt = idx[k], idx[k + 1]
        out = eps_fn(z, per_sample(cur, z, torch.float32))
        z = schedule.ddim_step(z, out, schedule.ab(cur), schedule.ab(nxt))
    return z
