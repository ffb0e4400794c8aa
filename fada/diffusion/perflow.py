"""PeRFlow (piecewise rectified flow) windows, targets, sampler and scheduler — paper Eq. 2–5.

Time t ∈ [0, 1], 1 = noise; K equal windows (t_e, t_s] = (1 − k/K, 1 − (k−1)/K]. Inside a window the student
learns the straight line from z_s (at t_s) to the teacher's endpoint ẑ_e (at t_e), parameterised as an ε so that
its teacher initialises it. The model's timestep input is T·t (T = 1000) as a float.

The student's output o is read in its teacher's parametrisation (``NoiseSchedule.prediction_type``) at the
window start: (x̂0, ε̂) of o at (z_s, ᾱ_s), and ẑ_e = √ᾱ_e·x̂0 + √(1−ᾱ_e)·ε̂ = A·z_s + B·o (a DDIM jump,
``NoiseSchedule.jump_coefficients``). For ε, (A, B) are Eq. 4's (λ, η); for v they stay defined at ᾱ_s = 0, the
first window of a zero-terminal-SNR teacher. Every formula below is written in A and B.

Training composes: t = sample_t(B) → w = perflow_window(x0, ε, t, K, schedule) → ẑ_e = ddim_solve(teacher,
w.z_s, w.index_s, w.index_e, N, schedule) → z_t, ô = perflow_target(w, ẑ_e) → loss ‖ô − o_stu(z_t, w.timestep)‖².
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .ddim import Callback, EpsFn
from .noise_schedule import NoiseSchedule
from .schedule import add_noise, expand_as_batch, per_sample

# A tenth of the 1/1000 time grid: absorbs float error so that t = 0.75 (or 0.75 + 1e-9) falls in (.5, .75]
# and not in (.75, 1] — the same tolerance as the PeRFlow reference code.
_WINDOW_TOL = 1e-4


# ---- windows and the two formulas ---------------------------------------------------------------------------

def window_of(t: Tensor | float, K: int) -> tuple[Tensor, Tensor]:
    """The window (t_e, t_s] containing t: t_s = ⌈tK⌉/K, t_e = t_s − 1/K (same shape/dtype as t)."""
    t = torch.as_tensor(t)
    t = t if t.is_floating_point() else t.double()
    k = torch.ceil((t - _WINDOW_TOL) * K).clamp(1, K)
    return k / K, (k - 1) / K


def window_coefficients(ab_s: Tensor, ab_e: Tensor, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """Eq. 4 (corrected; for ε: λ = √(ᾱ_e/ᾱ_s), η = √(1−ᾱ_e) − √(1−ᾱ_s)·λ), so that ẑ_e = λ·z_s + η·ô for the
    output ô of the schedule's parametrisation (``NoiseSchedule.jump_coefficients``); float64."""
    return schedule.jump_coefficients(ab_s, ab_e)


def student_input(z_s: Tensor, z_e: Tensor, t, t_s, t_e) -> Tensor:
    """Eq. 3 (corrected: the printed form omits z_s): z_t = z_s + (t − t_s)/(t_e − t_s)·(z_e − z_s)."""
    r = expand_as_batch(torch.as_tensor((t - t_s) / (t_e - t_s)), z_s).to(z_s.dtype)
    return z_s + r * (z_e - z_s)


def window_target(z_e: Tensor, z_s: Tensor, lam, eta) -> Tensor:
    """Eq. 4: ô = (z_e − λ·z_s)/η — the output (ε̂ for an ε student) that carries z_s to z_e in one DDIM jump."""
    lam = expand_as_batch(lam, z_s).to(z_s.dtype)
    eta = expand_as_batch(eta, z_s).to(z_s.dtype)
    return (z_e - lam * z_s) / eta


def sample_t(batch: int, generator: Optional[torch.Generator] = None, device=None,
             num_train_timesteps: int = 1000) -> Tensor:
    """t uniform on {1/T, 2/T, …, 1} (PeRFlow's training step 1), float32 (B,)."""
    k = torch.randint(1, num_train_timesteps + 1, (batch,), generator=generator, device=device)
    return k.float() / num_train_timesteps


# ---- training side --------------------------------------------------------------------------------------------

@dataclass
class PerflowWindow:
    """Per-sample window of a training batch; everything the teacher solve and the targets need."""

    t: Tensor          # (B,) sampled time
    t_s: Tensor        # (B,) window start (noisier end)
    t_e: Tensor        # (B,) window end
    index_s: Tensor    # (B,) long train index of t_s: DDIM solve start
    index_e: Tensor    # (B,) long train index of t_e: DDIM solve end (t_e = 0 ↦ −1, the clean end)
    ab_s: Tensor       # (B,) ᾱ(t_s)
    ab_e: Tensor       # (B,) ᾱ(t_e)
    lam: Tensor        # (B,) λ (Eq. 4; A of window_coefficients)
    eta: Tensor        # (B,) η (Eq. 4; B of window_coefficients)
    z_s: Tensor        # window start point √ᾱ_s·x0 + √(1−ᾱ_s)·ε
    timestep: Tensor   # (B,) student timestep input T·t (float)


def perflow_window(x0: Tensor, eps: Tensor, t: Tensor, K: int, schedule: NoiseSchedule) -> PerflowWindow:
    """The window of each t and its start point z_s on the ground-truth marginal (PeRFlow's training step 1)."""
    T = schedule.num_train_timesteps
    t = t.to(x0.device)
    t_s, t_e = window_of(t, K)
    ab_s, ab_e = schedule.alpha_bar(t_s), schedule.alpha_bar(t_e)
    lam, eta = window_coefficients(ab_s, ab_e, schedule)
    return PerflowWindow(t=t, t_s=t_s, t_e=t_e, index_s=schedule.t_to_index(t_s), index_e=schedule.t_to_index(t_e),
                         ab_s=ab_s, ab_e=ab_e, lam=lam.float(), eta=eta.float(), z_s=add_noise(x0, eps, ab_s),
                         timestep=(t * T).float())


def perflow_target(w: PerflowWindow, z_e: Tensor) -> tuple[Tensor, Tensor]:
    """Student input z_t (Eq. 3) and target ô (Eq. 4) for an endpoint z_e — the teacher's
    ẑ_e (L_distill) or the ground truth z_e (L_GT, Eq. 6)."""
    return student_input(w.z_s, z_e, w.t, w.t_s, w.t_e), window_target(z_e, w.z_s, w.lam, w.eta)


# ---- inference ------------------------------------------------------------------------------------------------

EXTRA_STEPS = ("early", "late")


def step_times(n: int, K: int = 4, extra: str = "early") -> Tensor:
    """The n inference times (float64, from 1 down): window i (0 = the noisiest) gets ⌊n/K⌋ steps at
    linspace(t_s, t_e, m, endpoint=False), plus one for the n mod K windows nearest t = 1 (``extra`` 'early', the
    paper §4.1: n = 6, K = 4 → 1, .875, .75, .625, .5, .25) or nearest t = 0 ('late': 1, .75, .5, .375, .25,
    .125), where a small pixel-space net's window maps bend most."""
    if n < K:
        # A window without a step would be crossed by extrapolating another window's line: refuse.
        raise ValueError(f"PeRFlow needs at least one step per window: n_steps={n} < num_windows={K}")
    if extra not in EXTRA_STEPS:
        raise ValueError(f"extra steps {extra!r}: choose one of {', '.join(EXTRA_STEPS)}")
    times = []
    for i in range(K):
        rank = i if extra == "early" else K - 1 - i
        m = n // K + (1 if rank < n % K else 0)
        t_s, t_e = 1 - i / K, 1 - (i + 1) / K
        times.append(np.linspace(t_s, t_e, m, endpoint=False))
    return torch.from_numpy(np.concatenate(times))


def perflow_step(z: Tensor, eps: Tensor, t_c, t_next, K: int, schedule: NoiseSchedule) -> Tensor:
    """One PeRFlow step from t_c (in its window (t_e, t_s]) to t_next (Eq. 3–4 inverted, then along the line).

    Inverts Eq. 3–4 for the current point: D = λ(t_c−t_s) + (t_e−t_c), λ_t = λ(t_e−t_s)/D, η_t = η(t_e−t_c)/D,
    ẑ_e = λ_t·z + η_t·o; then moves along the straight line: z ← z + (t_next − t_c)(ẑ_e − z)/(t_e − t_c).
    t_c, t_next: floats or per-sample (B,) tensors.
    """
    t_c = torch.as_tensor(t_c, dtype=torch.float64, device=z.device)
    t_next = torch.as_tensor(t_next, dtype=torch.float64, device=z.device)
    _, t_e = window_of(t_c, K)
    zf = z.float()
    z_e = implied_endpoint(z, eps, t_c, K, schedule)
    rate = expand_as_batch(((t_next - t_c) / (t_e - t_c)).float(), z)
    return (zf + rate * (z_e - zf)).to(z.dtype)


def implied_endpoint_coefficients(t_c, K: int, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """(λ_t, η_t) with ẑ_e = λ_t·z_t + η_t·o for a point z_t on the window line at t_c (Eq. 3–4 inverted):
    D = λ(t_c−t_s) + (t_e−t_c), λ_t = λ(t_e−t_s)/D, η_t = η(t_e−t_c)/D. float64, shape of t_c."""
    t_c = torch.as_tensor(t_c, dtype=torch.float64)
    t_s, t_e = window_of(t_c, K)
    lam, eta = window_coefficients(schedule.alpha_bar(t_s).double(), schedule.alpha_bar(t_e).double(), schedule)
    d = lam * (t_c - t_s) + (t_e - t_c)
    return lam * (t_e - t_s) / d, eta * (t_e - t_c) / d


def implied_endpoint(z: Tensor, eps: Tensor, t_c, K: int, schedule: NoiseSchedule) -> Tensor:
    """The window end ẑ_e a predicted output implies for the point z at time t_c (inverts Eq. 3–4); float32."""
    lam_t, eta_t = implied_endpoint_coefficients(torch.as_tensor(t_c, device=z.device), K, schedule)
    return expand_as_batch(lam_t.float(), z) * z.float() + expand_as_batch(eta_t.float(), z) * eps.float()


def velocity_weight(t, K: int, schedule: NoiseSchedule) -> Tensor:
    """w(t) with ‖u_θ − û‖² = w(t)·‖o_θ − ô‖² on the window line: the flow velocity u = (ẑ_e − z_t)/(t_e − t) is
    affine in the output o with slope η_t/(t_e − t), so a velocity-target loss is the output loss weighted by
    (η_t/(t_e − t))².
    Used by the plain rectified-flow baseline (one window, velocity target)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    _, t_e = window_of(t, K)
    _, eta_t = implied_endpoint_coefficients(t, K, schedule)
    return (eta_t / (t_e - t)).pow(2)


def window_line_remap(timesteps: Tensor, K: int, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """(scale, τ'): the noising-path point equivalent to a point of a PeRFlow window line, for preconditioned
    (CPU-scale) students (``AvatarNet.precond_windows``); float32, shape of ``timesteps`` (model units T·t).

    A student's input lies on the line z_s → ẑ_e (Eq. 3), not on the noising path its teacher was trained on.
    Along a DDIM path of one x0 the noise direction is fixed, so the line point is z_t = m·x0 + b·ε with
    m = (1−r)√ᾱ_s + r√ᾱ_e, b = (1−r)√(1−ᾱ_s) + r√(1−ᾱ_e), r = (t − t_s)/(t_e − t_s); scaled by 1/√(m² + b²) it
    is the path point at ᾱ' = m²/(m² + b²), whose ε, (z_t − m·x0)/b, is the window target ε̂ of Eq. 4. The net
    is therefore run at (scale·z_t, τ') with τ' the fractional train index of ᾱ' (linear in ᾱ between grid
    points): what its teacher initialisation already answers. At a window's start the map is the identity (up to
    the one-index offset of ``alpha_bar``); with one window it is far from it (t = 0.5 ↦ scale 1.35, τ' ≈ 342),
    and a student preconditioned for the path drew noise (demo RFlow row: 13.2 dB, 26.3 dB with the map)."""
    ac = schedule.alphas_cumprod.double()
    T = ac.shape[0]
    t = torch.as_tensor(timesteps, device=ac.device).double() / T
    t_s, t_e = window_of(t, K)
    r = (t - t_s) / (t_e - t_s)
    ab_s, ab_e = schedule.alpha_bar(t_s).double(), schedule.alpha_bar(t_e).double()
    m = (1 - r) * ab_s.sqrt() + r * ab_e.sqrt()
    b = (1 - r) * (1 - ab_s).sqrt() + r * (1 - ab_e).sqrt()
    norm2 = m * m + b * b
    ab = (m * m / norm2).clamp(float(ac[-1]), float(ac[0]))
    rising = ac.flip(0)                                   # ᾱ decreases with the index: search it rising
    j = torch.searchsorted(rising, ab.contiguous()).clamp(1, T - 1)
    lo, hi = rising[j - 1], rising[j]
    frac = ((ab - lo) / (hi - lo)).clamp(0, 1)
    return norm2.rsqrt().float(), ((T - 1) - (j - 1 + frac)).float()


def line_output(out: Tensor, z_path: Tensor, tau: Tensor, timesteps: Tensor, K: int,
                schedule: NoiseSchedule) -> Tensor:
    """A remapped net's output (at the path point ``z_path``, fractional index τ', ``window_line_remap``) in the
    window's parametrisation (read at the window start, the module docstring). Both points share x̂0 and ε̂, so for
    ε it is the output itself; for v it is re-expressed: v̂_s = √ᾱ_s·ε̂ − √(1−ᾱ_s)·x̂0."""
    if schedule.prediction_type == "epsilon":
        return out
    x0, eps = schedule.x0_eps(z_path, out, schedule.ab_at_timesteps(tau).to(z_path.device))
    t = torch.as_tensor(timesteps, device=z_path.device).double() / schedule.num_train_timesteps
    ab_s = schedule.alpha_bar(window_of(t, K)[0]).to(z_path.device)
    return schedule.output(x0, eps, ab_s).to(out.dtype)


def sample_perflow(eps_fn: EpsFn, z: Tensor, n_steps: int, schedule: NoiseSchedule, K: int = 4,
                   callback: Optional[Callback] = None, extra: str = "early") -> Tensor:
    """n-step PeRFlow sampling from noise z (t = 1) to t = 0 at ``step_times(n_steps, K, extra)``; eps_fn(z, T·t)
    is the student's output."""
    T = schedule.num_train_timesteps
    times = step_times(n_steps, K, extra).tolist() + [0.0]
    for i in range(n_steps):
        t_c, t_next = times[i], times[i + 1]
        eps = eps_fn(z, per_sample(T * t_c, z, torch.float32))
        z = perflow_step(z, eps, t_c, t_next, K, schedule)
        if callback is not None:
            callback(i, torch.tensor(t_next), z)
    return z


# ---- diffusers-style scheduler --------------------------------------------------------------------------------

@dataclass
class PeRFlowSchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor


class PeRFlowScheduler(SchedulerMixin, ConfigMixin):
    """diffusers-style wrapper of `perflow_step`; timesteps are in model units (T·t, float). The config carries the
    teacher's whole `NoiseSchedule` (its prediction type is the student's), plus the windows and step placement."""

    config_name = "scheduler_config.json"
    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", num_windows: int = 4, extra_steps: str = "early",
                 prediction_type: str = "epsilon", timestep_spacing: str = "leading", steps_offset: int = 1,
                 set_alpha_to_one: bool = False, rescale_betas_zero_snr: bool = False):
        self.schedule = NoiseSchedule(num_train_timesteps, beta_start, beta_end, beta_schedule, prediction_type,
                                      timestep_spacing, steps_offset, set_alpha_to_one, rescale_betas_zero_snr)
        self.alphas_cumprod = self.schedule.alphas_cumprod
        self.init_noise_sigma = 1.0
        self.num_inference_steps: Optional[int] = None
        self.times: Optional[Tensor] = None  # float64 t ∈ (0, 1]: exact, so step() matches sample_perflow
        self.timesteps: Optional[Tensor] = None

    @classmethod
    def for_schedule(cls, schedule: NoiseSchedule, num_windows: int = 4, extra_steps: str = "early"):
        kw = {k: v for k, v in schedule.diffusers_config().items() if k != "clip_sample"}
        return cls(num_windows=int(num_windows), extra_steps=extra_steps, **kw)
    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        self.num_inference_steps = num_inference_steps
        self.times = step_times(num_inference_steps, self.config.num_windows, self.config.extra_steps)
        self.timesteps = (self.times * self.config.num_train_timesteps).float().to(device)

    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        return sample

    def _times_around(self, timestep) -> tuple[float, float]:
        if self.timesteps is None:
            raise ValueError("call set_timesteps before step")
        gap = (self.timesteps.cpu() - float(timestep)).abs()
        i = int(gap.argmin())
        if gap[i] > 0.5:
            raise ValueError(f"timestep {float(timestep)} is not one of this scheduler's timesteps")
        t_next = float(self.times[i + 1]) if i + 1 < len(self.times) else 0.0
        return float(self.times[i]), t_next

    def step(self, model_output: Tensor, timestep, sample: Tensor, return_dict: bool = True):
        t_c, t_next = self._times_around(timestep)
        prev = perflow_step(sample, model_output, t_c, t_next, self.config.num_windows, self.schedule)
        return PeRFlowSchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps) -> Tensor:
        """Forward process at model-unit timesteps (T·t), via the same ᾱ(t) rule as training."""
        t = torch.as_tensor(timesteps, device=original_samples.device).double() / self.config.num_train_timesteps
        return add_noise(original_samples, noise, self.schedule.alpha_bar(t))

    def __len__(self) -> int:
        return self.config.num_train_timesteps
