"""Multi-condition classifier-free guidance (paper Eq. 9) over the shared model_fn contract.

``model_fn(z, t_index, keep_audio, keep_ref) -> eps``: t_index float/long (N,) train timesteps, keep_audio /
keep_ref bool (N,) saying which conditions each sample sees. The three Eq. 9 branches are
a = audio + reference, r = reference only, b = neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .schedule import expand_as_batch, per_sample

ModelFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
EpsFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Guidance:
    """Eq. 9 scales; floats, or per-sample (B,) tensors (multi-CFG distillation draws them per sample)."""

    cfg_a: float | Tensor = 6.5
    cfg_r: float | Tensor = 2.5

    @property
    def is_identity(self) -> bool:
        """cfg_a = cfg_r = 1 makes Eq. 9 collapse to ε_a: one pass suffices."""
        return not isinstance(self.cfg_a, Tensor) and not isinstance(self.cfg_r, Tensor) \
            and self.cfg_a == 1.0 and self.cfg_r == 1.0

    @property
    def single_scale(self) -> bool:
        """cfg_a = cfg_r = s makes Eq. 9 collapse to ε_b + s·(ε_a − ε_b): ε_r cancels, two passes suffice (the
        classifier-free guidance of one scale over [unconditional, conditional] that Hallo samples with)."""
        return not isinstance(self.cfg_a, Tensor) and not isinstance(self.cfg_r, Tensor) \
            and self.cfg_a == self.cfg_r and not self.is_identity

    @property
    def branches(self) -> tuple[tuple[bool, bool], ...]:
        """(keep_audio, keep_ref) of each batched branch, in batch order: one (a), two (b, a: unconditional first,
        Hallo's [uncond, cond] order) or three (a, r, b)."""
        if self.is_identity:
            return ((True, True),)
        if self.single_scale:
            return ((False, False), (True, True))
        return ((True, True), (False, True), (False, False))

    @property
    def passes(self) -> int:
        return len(self.branches)


TEACHER_GUIDANCE = Guidance(cfg_a=6.5, cfg_r=2.5)  # paper §4.1: models without CFG distillation
DISTILLED_GUIDANCE = Guidance(cfg_a=6.5, cfg_r=2.0)  # paper §4.1: CFG-distilled (Fast) students
NO_GUIDANCE = Guidance(cfg_a=1.0, cfg_r=1.0)


def multi_cfg(eps_a: Tensor, eps_r: Tensor, eps_b: Tensor, cfg_a: float | Tensor, cfg_r: float | Tensor) -> Tensor:
    """Eq. 9: ε_cfg = cfg_a·(ε_a − ε_r) + cfg_r·(ε_r − ε_b) + ε_b; scales scalar or per-sample (B,)."""
    cfg_a = expand_as_batch(cfg_a, eps_a).to(eps_a.dtype)
    cfg_r = expand_as_batch(cfg_r, eps_a).to(eps_a.dtype)
    return cfg_a * (eps_a - eps_r) + cfg_r * (eps_r - eps_b) + eps_b


def _mask(m: Optional[Tensor], z: Tensor) -> Tensor:
    return per_sample(True if m is None else m, z, torch.bool)


def conditional_eps(
    model_fn: ModelFn, z: Tensor, t: Tensor | float, keep_audio: Optional[Tensor] = None,
    keep_ref: Optional[Tensor] = None,
) -> Tensor:
    """One pass, guidance 1, with the given keep masks (default: every condition kept)."""
    return model_fn(z, per_sample(t, z), _mask(keep_audio, z), _mask(keep_ref, z))


def guided_eps(
    model_fn: ModelFn, z: Tensor, t: Tensor | float, cfg_a: float | Tensor, cfg_r: float | Tensor,
    keep_audio: Optional[Tensor] = None, keep_ref: Optional[Tensor] = None,
) -> Tensor:
    """Eq. 9 with its branches run as ONE batch (one forward instead of three; ``Guidance.branches`` order).

    keep_audio / keep_ref are the a-branch masks (default all True); r drops audio, b drops both. With equal
    scalar scales ε_r cancels and only b and a run (``Guidance.single_scale``)."""
    ka, kr = _mask(keep_audio, z), _mask(keep_ref, z)
    off = torch.zeros_like(ka)
    t = per_sample(t, z)
    if Guidance(cfg_a, cfg_r).single_scale:
        eps_b, eps_a = model_fn(torch.cat([z, z]), torch.cat([t, t]), torch.cat([off, ka]),
                                torch.cat([off, kr])).chunk(2)
        return eps_b + float(cfg_a) * (eps_a - eps_b)  # Eq. 9 at cfg_a = cfg_r
    eps = model_fn(torch.cat([z, z, z]), torch.cat([t, t, t]), torch.cat([ka, off, off]), torch.cat([kr, kr, off]))
    eps_a, eps_r, eps_b = eps.chunk(3)
    return multi_cfg(eps_a, eps_r, eps_b, cfg_a, cfg_r)


def conditional(model_fn: ModelFn, keep_audio: Optional[Tensor] = None, keep_ref: Optional[Tensor] = None) -> EpsFn:
    """model_fn → sampler EpsFn ``fn(z, t)``: single conditional pass (students; Balanced teacher endpoints)."""
    return lambda z, t: conditional_eps(model_fn, z, t, keep_audio, keep_ref)


def guided(
    model_fn: ModelFn, guidance: Guidance = TEACHER_GUIDANCE, keep_audio: Optional[Tensor] = None,
    keep_ref: Optional[Tensor] = None,
) -> EpsFn:
    """model_fn → sampler EpsFn ``fn(z, t)`` applying Eq. 9 (one pass when the scales are both 1)."""
    if guidance.is_identity:
        return conditional(model_fn, keep_audio, keep_ref)
    return lambda z, t: guided_eps(model_fn, z, t, guidance.cfg_a, guidance.cfg_r, keep_audio, keep_ref)
