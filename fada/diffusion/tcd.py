"""Trajectory consistency distillation (TCD; Zheng et al. 2024), the Table 2 baseline beside RFlow and PeRFlow.

The student keeps its teacher's parametrisation (ε or v, `NoiseSchedule`). Its trajectory consistency function is
TCD's semi-linear one, a DDIM jump from t to any earlier s with the student's own x̂0 and ε̂ (TCD Eq. 10):

    f_θ(x_t, t, s) = √ᾱ_s · x̂_0 + √(1−ᾱ_s) · ε̂,   (x̂_0, ε̂) of the output at (x_t, ᾱ_t)

Training, per sample (TCD Algorithm 1): t = τ_n on the teacher's skipping-step grid τ (original_steps points,
τ_i = (i+1)·T/N − 1), the previous grid point t' = τ_{n−1}, s uniform in [0, t'], x_t = q(x_0, t);
x̂_{t'} = one DDIM step of the frozen teacher (Eq. 2 with one step); loss ‖f_θ(x_t, t, s) − f_θ⁻(x̂_{t'}, t', s)‖²
with θ⁻ the student without gradients (a stop-gradient target, as improved consistency training uses, instead of
an EMA copy that the loop would have to carry). At the start (t = τ_0) the target is the teacher's own jump to s.

Sampling uses diffusers' ``TCDScheduler`` (``tcd_scheduler``: ``set_timesteps(steps)`` on the grid of N,
``step(o, t, x, eta=γ)``; γ the stochasticity, TCD's default 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .noise_schedule import NoiseSchedule

ORIGINAL_STEPS = 50
"""N, points of the teacher's skipping-step grid (TCD and LCM: 50)."""
GAMMA = 0.3
"""γ of TCD's strategic stochastic sampling (its default)."""


def tcd_grid(original_steps: int = ORIGINAL_STEPS, num_train_timesteps: int = 1000) -> Tensor:
    """τ_i = (i+1)·T/N − 1, i = 0..N−1 (the 'leading' grid of diffusers' TCD / LCM schedulers), int64."""
    c = num_train_timesteps // original_steps
    return torch.arange(1, original_steps + 1) * c - 1


@dataclass
class TCDSample:
    t: Tensor        # (B,) int64 train index of x_t
    t_prev: Tensor   # (B,) int64 the previous grid point (−1 at the grid's start: the target is the teacher's jump)
    s: Tensor        # (B,) int64 where both consistency functions jump to, 0 <= s <= t_prev (s = 0 at the start)


def sample_tcd(batch: int, generator: torch.Generator, device=None, original_steps: int = ORIGINAL_STEPS,
               num_train_timesteps: int = 1000) -> TCDSample:
    """t on the grid, its previous grid point, and s uniform on the train indices 0..t' (TCD Algorithm 1)."""
    grid = tcd_grid(original_steps, num_train_timesteps).to(device)
    n = torch.randint(0, original_steps, (batch,), generator=generator, device=device)
    t = grid[n]
    t_prev = torch.where(n > 0, grid[(n - 1).clamp(min=0)], torch.full_like(t, -1))
    u = torch.rand(batch, generator=generator, device=device)
    s = torch.floor(u * (t_prev.clamp(min=0) + 1).float()).long().clamp(max=t_prev.clamp(min=0))
    return TCDSample(t=t, t_prev=t_prev, s=s)


def consistency_jump(x_t: Tensor, out: Tensor, t: Tensor, s: Tensor, schedule: NoiseSchedule) -> Tensor:
    """TCD's semi-linear consistency function f(x_t, t, s) (TCD Eq. 10): the DDIM jump from train index t to s
    with the net's output, i.e. ``NoiseSchedule.ddim_step`` between any two indices."""
    return schedule.ddim_step(x_t, out, schedule.ab(t), schedule.ab(s))


def tcd_scheduler(schedule: NoiseSchedule, original_steps: int = ORIGINAL_STEPS):
    """diffusers' ``TCDScheduler`` for sampling a TCD student, built in memory from the model's `NoiseSchedule`
    (its prediction type, spacing and ᾱ: the schedule's own tensor, so sampler and training read one ᾱ)."""
    from diffusers import TCDScheduler

    sched = TCDScheduler(**schedule.diffusers_config(), original_inference_steps=int(original_steps))
    sched.alphas_cumprod = schedule.alphas_cumprod.clone()
    sched.final_alpha_cumprod = torch.tensor(schedule.final_alpha_cumprod)
    return sched
