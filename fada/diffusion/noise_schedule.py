"""The one owner of the diffusion parametrisation: ᾱ, what the net predicts, where DDIM steps land.

A `NoiseSchedule` holds the settings of a diffusers ``DDIMScheduler`` config that fada models use (betas,
``prediction_type`` ε or v, ``timestep_spacing`` leading or trailing, ``steps_offset``, ``set_alpha_to_one``,
``rescale_betas_zero_snr``) and derives from them everything a sampler, a loss or an export needs:

- ᾱ over the train indices, built by diffusers itself (so values equal its schedulers' bit for bit), and the
  clean end ᾱ_final (index −1: 1 with ``set_alpha_to_one``, else ᾱ[0]);
- the conversions between a net's output o and the pair (x̂0, ε̂) at a point z with ᾱ (docs/architecture.md,
  "The parametrisation")::

      ε:  x̂0 = (z − √(1−ᾱ)·o)/√ᾱ,      ε̂ = o
      v:  x̂0 = √ᾱ·z − √(1−ᾱ)·o,        ε̂ = √(1−ᾱ)·z + √ᾱ·o      (v = √ᾱ·ε − √(1−ᾱ)·x0)

  and the training target (ε, or v) of a noised sample; v stays defined where ᾱ = 0 (zero terminal SNR), ε does
  not, so an ε net with a zero-SNR schedule is refused;
- the DDIM grid of n steps with diffusers' rule for the step's end (t − T//n, the clean end past 0).

Time t ∈ [0, 1] (1 = noise, PeRFlow's convention) maps to the train index round(T·t) − 1; t = 0 is the clean end.
The default is Stable Diffusion 1.5's: 1000 steps, scaled-linear betas 0.00085 → 0.012, ε, leading spacing with
offset 1, ᾱ_final = ᾱ[0].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction")
SPACINGS = ("leading", "trailing")
BETA_SCHEDULES = ("scaled_linear", "linear")

# Settings of a diffusers scheduler config that change the sampling and that fada does not implement: refused by
# name rather than ignored.
_UNSUPPORTED = {"trained_betas": None, "clip_sample": False, "thresholding": False}


def expand_as_batch(v: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or per-sample (B,) value shaped (B, 1, …, 1) to broadcast over x's trailing dims."""
    v = torch.as_tensor(v, device=x.device)
    if v.dim() == 0:
        return v
    if v.shape[0] != x.shape[0] or v.dim() != 1:
        raise ValueError(f"per-sample value of shape {tuple(v.shape)} does not match batch {x.shape[0]}")
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _expand(v: Tensor | float, x: Tensor) -> Tensor:
    return expand_as_batch(v, x).to(torch.float32)


def schedule_problems(cfg) -> list[str]:
    """Every setting of ``cfg`` (a NoiseSchedule, or anything with its fields) that is out of range, one line each
    (keys as in a diffusers scheduler config)."""
    out = []
    if cfg.prediction_type not in PREDICTION_TYPES:
        out.append(f"prediction_type: {cfg.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
    if cfg.timestep_spacing not in SPACINGS:
        out.append(f"timestep_spacing: {cfg.timestep_spacing!r} is not one of {', '.join(SPACINGS)}")
    if cfg.beta_schedule not in BETA_SCHEDULES:
        out.append(f"beta_schedule: {cfg.beta_schedule!r} is not one of {', '.join(BETA_SCHEDULES)}")
    if int(cfg.num_train_timesteps) < 2:
        out.append(f"num_train_timesteps: {cfg.num_train_timesteps} < 2")
    if not 0 < float(cfg.beta_start) < float(cfg.beta_end) < 1:
        out.append(f"beta_start/beta_end: need 0 < {cfg.beta_start} < {cfg.beta_end} < 1")
    if cfg.rescale_betas_zero_snr and cfg.prediction_type == "epsilon":
        # where ᾱ = 0 the noisy sample is pure noise: an ε output then says nothing about x0
        out.append("rescale_betas_zero_snr: needs prediction_type 'v_prediction' (an ε net gives no x̂0 where "
                   "ᾱ = 0)")
    return out


@dataclass(frozen=True)
class NoiseSchedule:
    """A diffusion model's noise schedule and output parametrisation (see the module docstring)."""

    num_train_timesteps: int = 1000
    """T, the train indices 0..T−1."""
    beta_start: float = 0.00085
    """First β."""
    beta_end: float = 0.012
    """Last β."""
    beta_schedule: str = "scaled_linear"
    """'scaled_linear' (SD1.5: betas linear in √β) or 'linear'."""
    prediction_type: str = "epsilon"
    """What the net outputs: 'epsilon' (the noise) or 'v_prediction' (v = √ᾱ·ε − √(1−ᾱ)·x0)."""
    timestep_spacing: str = "leading"
    """DDIM grid: 'leading' (0, T//n, … + steps_offset; SD1.5) or 'trailing' (T − 1 down, in steps of T/n)."""
    steps_offset: int = 1
    """Added to the 'leading' grid (SD1.5: 1)."""
    set_alpha_to_one: bool = False
    """ᾱ of the clean end past the last step: 1, or ᾱ[0] (SD1.5)."""
    rescale_betas_zero_snr: bool = False
    """Rescale the betas to zero terminal SNR (ᾱ[T−1] = 0; Lin et al. 2024), as Hallo's teacher was trained."""
    _ac: Tensor = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self):
        problems = schedule_problems(self)
        if problems:
            raise ValueError("noise schedule: " + "; ".join(problems))
        from diffusers import DDIMScheduler

        ac = DDIMScheduler(**self.diffusers_config()).alphas_cumprod.to(torch.float32)
        object.__setattr__(self, "_ac", ac)

    # -- diffusers config round trip -----------------------------------------------------------------------------
    def diffusers_config(self) -> dict:
        """The ``DDIMScheduler`` keyword arguments of this schedule (also valid for ``TCDScheduler``)."""
        return {"num_train_timesteps": int(self.num_train_timesteps), "beta_start": float(self.beta_start),
                "beta_end": float(self.beta_end), "beta_schedule": self.beta_schedule, "clip_sample": False,
                "set_alpha_to_one": bool(self.set_alpha_to_one), "steps_offset": int(self.steps_offset),
                "prediction_type": self.prediction_type, "timestep_spacing": self.timestep_spacing,
                "rescale_betas_zero_snr": bool(self.rescale_betas_zero_snr)}

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "NoiseSchedule":
        """From a diffusers scheduler config (``scheduler_config.json``) or ``to_dict()``, read completely: every
        field of this class, a key left out taking fada's default (SD1.5's, what folders written before a key
        existed meant); keys of other schedulers sharing the folder (PeRFlow's windows, TCD's grid) pass. Settings
        fada does not sample with are refused by name. Raises ValueError listing every problem."""
        problems = [f"{k}: {cfg[k]!r} is not supported (fada samples with {k}={ok!r})"
                    for k, ok in _UNSUPPORTED.items() if cfg.get(k, ok) != ok]
        kwargs = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            v = cfg.get(f.name, f.default)
            kind = type(f.default)
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if kind is bool and isinstance(v, bool) or kind is str and isinstance(v, str) \
                    or kind is int and number and float(v).is_integer() or kind is float and number:
                kwargs[f.name] = kind(v)
            else:
                problems.append(f"{f.name}: {v!r} has the wrong type (expected {kind.__name__})")
        if not problems:
            problems += schedule_problems(SimpleNamespace(**kwargs))
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**kwargs)

    # -- ᾱ ---------------------------------------------------------------------------------------------------------
    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_i = ∏_{j≤i} (1 − β_j), float32 (T,)."""
        return self._ac

    @property
    def final_alpha_cumprod(self) -> float:
        """ᾱ of the clean end (index −1): 1 with ``set_alpha_to_one``, else ᾱ[0]."""
        return 1.0 if self.set_alpha_to_one else float(self._ac[0])

    @property
    def zero_terminal_snr(self) -> bool:
        return float(self._ac[-1]) == 0.0

    def ab(self, index: Tensor | int) -> Tensor:
        """ᾱ at train indices (any shape, float32, on the index's device); −1 (and below) is the clean end."""
        index = torch.as_tensor(index)
        ac = self._ac.to(index.device)
        final = torch.tensor(self.final_alpha_cumprod, dtype=torch.float32, device=index.device)
        return torch.where(index.long() < 0, final, ac[index.long().clamp(min=0)])

    def t_to_index(self, t: Tensor | float) -> Tensor:
        """Continuous time t ∈ [0, 1] → train index round(T·t) − 1 (long; t = 0 ↦ −1, the clean end)."""
        t = torch.as_tensor(t)
        t = t if t.is_floating_point() else t.double()
        return torch.round(t * self.num_train_timesteps).long() - 1

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """ᾱ(t) = ᾱ[round(T·t) − 1] for t ∈ [0, 1], with t = 0 the clean end (scalar or any-shaped tensor)."""
        return self.ab(self.t_to_index(t))

    def ab_at_timesteps(self, timesteps: Tensor | float) -> Tensor:
        """float32 ᾱ at model timestep inputs (train-index units, clamped to [0, T−1]; linear between grid points,
        so integer timesteps read the grid and a fractional one its neighbours)."""
        T = self.num_train_timesteps
        ac = self._ac.double()
        tau = torch.as_tensor(timesteps).double().clamp(0, T - 1)
        lo = tau.floor().long().clamp(max=T - 2)
        frac = tau - lo
        ac = ac.to(tau.device)
        return (ac[lo] * (1 - frac) + ac[lo + 1] * frac).to(torch.float32)

    # -- DDIM grid -------------------------------------------------------------------------------------------------
    def ddim_timesteps(self, num_steps: int) -> tuple[Tensor, Tensor]:
        """(timesteps, ends): the n train indices of a DDIM run, high to low, as diffusers' ``set_timesteps``
        spaces them, and where each step lands, t − T//n (diffusers' ``step``; negative = the clean end). For
        'leading' each end is the next timestep; for 'trailing' it may lie one index off it, as in diffusers."""
        T = int(self.num_train_timesteps)
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps must be in 1..{T}, got {num_steps}")
        if self.timestep_spacing == "leading":
            ts = (np.arange(0, num_steps) * (T // num_steps)).round()[::-1].astype(np.int64) + self.steps_offset
        else:
            ts = np.round(np.arange(T, 0, -T / num_steps)).astype(np.int64) - 1
        ts = torch.from_numpy(ts.copy())
        ends = ts - T // num_steps
        return ts, torch.where(ends < 0, torch.full_like(ends, -1), ends)

    # -- the parametrisation ---------------------------------------------------------------------------------------
    def x0_eps(self, z: Tensor, out: Tensor, ab: Tensor | float) -> tuple[Tensor, Tensor]:
        """(x̂0, ε̂) of a net output at the point z with ᾱ (scalar or per-sample (B,)), float32."""
        ab = _expand(ab, z)
        z, out = z.float(), out.float()
        if self.prediction_type == "epsilon":
            return (z - (1 - ab).sqrt() * out) / ab.sqrt(), out
        return ab.sqrt() * z - (1 - ab).sqrt() * out, ab.sqrt() * out + (1 - ab).sqrt() * z

    def output(self, x0: Tensor, eps: Tensor, ab: Tensor | float) -> Tensor:
        """The net output that stands for (x0, ε) at ᾱ: the training target of z = √ᾱ·x0 + √(1−ᾱ)·ε (Eq. 1 for
        ε; v = √ᾱ·ε − √(1−ᾱ)·x0), in x0's dtype."""
        if self.prediction_type == "epsilon":
            return eps
        a = _expand(ab, x0)
        return (a.sqrt() * eps.float() - (1 - a).sqrt() * x0.float()).to(x0.dtype)

    def output_from_x0(self, z: Tensor, x0: Tensor, ab: Tensor | float) -> Tensor:
        """The net output at the point z with ᾱ that implies x̂0 (ε: (z − √ᾱ·x̂0)/√(1−ᾱ); v: (√ᾱ·z − x̂0)/√(1−ᾱ)),
        float32; defined for ᾱ < 1."""
        a = _expand(ab, z)
        z, x0 = z.float(), x0.float()
        if self.prediction_type == "epsilon":
            return (z - a.sqrt() * x0) / (1 - a).sqrt()
        return (a.sqrt() * z - x0) / (1 - a).sqrt()

    def jump_coefficients(self, ab_from: Tensor | float, ab_to: Tensor | float) -> tuple[Tensor, Tensor]:
        """(A, B) with DDIM's deterministic jump z' = √ᾱ'·x̂0 + √(1−ᾱ')·ε̂ = A·z + B·o for an output o at (z, ᾱ)
        (same shapes as the ᾱ's, float64). ε: A = √(ᾱ'/ᾱ), B = √(1−ᾱ') − √(1−ᾱ)·A (PeRFlow's λ, η, Eq. 4);
        v: A = √ᾱ'·√ᾱ + √(1−ᾱ')·√(1−ᾱ), B = √(1−ᾱ')·√ᾱ − √ᾱ'·√(1−ᾱ), defined at ᾱ = 0."""
        a = torch.as_tensor(ab_from).double()
        b = torch.as_tensor(ab_to, device=a.device).double()
        if self.prediction_type == "epsilon":
            lam = (b / a).sqrt()
            return lam, (1 - b).sqrt() - (1 - a).sqrt() * lam
        sa, sb, ca, cb = a.sqrt(), b.sqrt(), (1 - a).sqrt(), (1 - b).sqrt()
        return sb * sa + cb * ca, cb * sa - sb * ca

    def ddim_step(self, z: Tensor, out: Tensor, ab_t: Tensor | float, ab_prev: Tensor | float) -> Tensor:
        """One deterministic DDIM step (η = 0): x̂0, ε̂ from the output at ᾱ_t, then z' = √ᾱ_prev·x̂0 + √(1−ᾱ_prev)·ε̂
        (diffusers' ``DDIMScheduler.step``). float32 arithmetic, z's dtype out."""
        x0, eps = self.x0_eps(z, out, ab_t)
        ab_prev = _expand(ab_prev, z)
        return (ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps).to(z.dtype)



SD15 = NoiseSchedule()
"""Stable Diffusion 1.5's schedule (ε, scaled-linear, leading): every fada model's unless its config says
otherwise."""


def as_schedule(value) -> NoiseSchedule:
    """A NoiseSchedule from a schedule, a dict (``to_dict`` / diffusers config) or None (SD1.5)."""
    if value is None:
        return SD15
    if isinstance(value, NoiseSchedule):
        return value
    return NoiseSchedule.from_config(value)
