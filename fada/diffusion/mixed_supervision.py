"""Adaptive mixed supervision (paper §3.2, Eq. 6–8).

The student gets a second target from the ground truth: the teacher endpoint ẑ_e is replaced by the real
z_e on the same (x0, ε) (Eq. 6, via `perflow_target`); its loss is weighted per sample by W(R), R = L_GT/L_distill.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .schedule import add_noise

MixedMode = Literal["off", "fixed", "adaptive_unlimited", "adaptive"]
MODES = ("off", "fixed", "adaptive_unlimited", "adaptive")
_RATIO_EPS = 1e-12  # guards R against L_distill = 0


def ground_truth_endpoint(x0: Tensor, eps: Tensor, ab_e: Tensor | float) -> Tensor:
    """z_e = √ᾱ_e·x0 + √(1−ᾱ_e)·ε: the window end on the data's own marginal (replaces ẑ_e in Eq. 3–4)."""
    return add_noise(x0, eps, ab_e)


def per_sample_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """‖pred − target‖² averaged over every dim but the batch: (B,) losses, as Eq. 7–8 need per-sample R.
    ``weight`` (broadcast over the trailing dims, e.g. an (h, w) map of mean 1) weights each squared error."""
    err = (pred.float() - target.float()).pow(2)
    if weight is not None:
        err = err * weight.to(err.device, err.dtype)
    return err.flatten(1).mean(1)


def mixed_weight(R: Tensor, mode: MixedMode = "adaptive", s: float = 0.25, w0: float = 0.2, r_peak: float = 30.0,
                 r_dead: float = 100.0, fixed: float = 0.2) -> Tensor:
    """W(R) per sample. 'adaptive' is Eq. 8: W0·R^s for R < R_p; W0·R_p^s·(R_d − R)/(R_d − R_p) for
    R_p ≤ R < R_d; 0 for R ≥ R_d. Ablations: 'off' → 0, 'fixed' → `fixed`, 'adaptive_unlimited' → W0·R^s."""
    R = torch.as_tensor(R)
    if mode == "off":
        return torch.zeros_like(R)
    if mode == "fixed":
        return torch.full_like(R, fixed)
    if mode not in MODES:
        raise ValueError(f"mixed supervision mode must be one of {MODES}, got {mode!r}")
    rise = w0 * R.clamp(min=0) ** s
    if mode == "adaptive_unlimited":
        return rise
    fall = w0 * r_peak**s * (r_dead - R) / (r_dead - r_peak)  # Eq. 8, middle branch
    return torch.where(R < r_peak, rise, torch.where(R < r_dead, fall, torch.zeros_like(R)))


def mixed_loss(l_distill: Tensor, l_gt: Tensor, mode: MixedMode = "adaptive", **weight_kw) -> tuple[Tensor, dict]:
    """Eq. 7 over per-sample (B,) losses: mean(L_distill + W(R)·L_GT), R = L_GT/L_distill with no gradient.

    Returns (total, stats) with stats = {'w_mean', 'w_zero_frac', 'ratio' (B,)}, all detached.
    """
    ratio = (l_gt / l_distill.clamp(min=_RATIO_EPS)).detach()
    w = mixed_weight(ratio, mode, **weight_kw).to(l_gt.dtype)
    total = (l_distill + w * l_gt).mean()
    stats = {"w_mean": w.mean(), "w_zero_frac": (w == 0).float().mean(), "ratio": ratio}
    return total, stats
