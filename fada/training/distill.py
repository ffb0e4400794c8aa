"""The distillation objective (paper §3.1–3.3): PeRFlow targets from the frozen teacher, the
ground-truth target of adaptive mixed supervision, and multi-CFG distillation into the student's CFG conditioning.

One training step, per sample:
  t → window (t_e, t_s], z_s on the data marginal                                  (PeRFlow step 1)
  ẑ_e = N-step DDIM of the teacher from t_s to t_e, no gradients                   (Eq. 2)
        Balanced, RFlow: guidance 1 on the student's own dropped conditions
        Fast:     multi-CFG (Eq. 9) at scales drawn per sample; the student is told the scales (Eq. 10)
  z_t, ε̂ = perflow_target(ẑ_e);  z*_t, ε* = perflow_target(z_e)                   (Eq. 3–4, Eq. 6)
  L = mean(L_distill + W(R)·L_GT), R = L_GT / L_distill                            (Eq. 5, 7, 8)
  (``distill.mouth_weight`` weights both per-sample errors by the same mean-1 map: R compares like with like)
  (a preconditioned CPU-scale student weights both per-sample errors by 1/κ(t)², which leaves R unchanged)
The two student passes run as one batch of 2B (one forward: cheaper, and what DDP needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fada.diffusion import (DISTILLED_GUIDANCE, Guidance, conditional, ddim_solve, ground_truth_endpoint, guided,
                            mixed_loss, per_sample_mse, perflow_target, perflow_window, sample_t, velocity_weight,
                            step_times)
from fada.data.face_conditions import batch_portrait
from fada.training.motion_augment import augment_motion
from fada.training.teacher import ConditionDropout


@dataclass
class DistillSettings:
    variant: str                      # balanced | fast | rflow
    num_windows: int                  # K (rflow: 1)
    solver_steps: int                 # teacher DDIM steps per window
    cfg_audio_range: tuple[float, float]
    cfg_ref_range: tuple[float, float]
    dropout: ConditionDropout         # Balanced: the student's own condition dropout
    mixed_mode: str
    mixed_kwargs: dict
    student_cfg_mode: str             # none | time_embed | layer | tokens
    timesteps: str = "uniform"        # uniform | inference (DistillConfig.timesteps)
    inference_steps: int = 6          # the sampler's steps (their times, for timesteps 'inference')
    extra_steps: str = "early"        # which windows get the extra steps (DistillConfig.extra_steps)
    tcd_original_steps: int = 50      # TCD: points of the teacher's skipping-step grid
    motion_noise: float = 0.0         # motion-frame corruption (DistillConfig.motion_augment)
    motion_to_ref: float = 0.0
    pixel_weight: Tensor | None = None  # (h, w) mean-1 latent weights of both loss terms (DistillConfig.mouth_weight)

    @classmethod
    def from_config(cls, d, cfg_mode: str) -> "DistillSettings":
        m = d.mixed
        return cls(variant=d.variant, num_windows=1 if d.variant == "rflow" else d.num_windows,
                   solver_steps=d.solver_steps, cfg_audio_range=tuple(d.cfg_audio_range),
                   cfg_ref_range=tuple(d.cfg_ref_range),
                   dropout=ConditionDropout(d.audio_drop, d.ref_drop),
                   mixed_mode=m.mode, mixed_kwargs=dict(s=m.s, w0=m.w0, r_peak=m.r_peak, r_dead=m.r_dead, fixed=m.fixed),
                   student_cfg_mode=cfg_mode, timesteps=d.timesteps, inference_steps=d.inference_steps,
                   extra_steps=d.extra_steps, tcd_original_steps=d.tcd_original_steps,
                   motion_noise=d.motion_augment.noise, motion_to_ref=d.motion_augment.to_ref)

    @property
    def guided_teacher(self) -> bool:
        """Fast distils the multi-CFG teacher. Balanced and the one-window RFlow baseline (Table 2: "free from
        mixed-supervised and CFG distillation", sampled with multi-CFG at 18 NFE) distil the guidance-1 teacher on
        the student's own dropped conditions, so that the multi-CFG applied at sampling is applied once."""
        return self.variant == "fast"


def sample_scales(batch: int, s: DistillSettings, generator: torch.Generator, device) -> Tensor:
    """(B, 2) = (cfg_a, cfg_r) per sample, uniform over the recipe ranges; fixed at the paper's CFG-distilled
    defaults when the student cannot be told the scales (cfg mode 'none')."""
    if s.student_cfg_mode == "none":
        return torch.tensor([[DISTILLED_GUIDANCE.cfg_a, DISTILLED_GUIDANCE.cfg_r]], device=device).expand(batch, 2)
    u = torch.rand(batch, 2, generator=generator, device=device)
    lo = torch.tensor([s.cfg_audio_range[0], s.cfg_ref_range[0]], device=device)
    hi = torch.tensor([s.cfg_audio_range[1], s.cfg_ref_range[1]], device=device)
    return lo + u * (hi - lo)


def sample_distill_t(batch: int, s: DistillSettings, generator: torch.Generator, device=None) -> Tensor:
    """(B,) training times: uniform on the 1000-step grid (PeRFlow), or for ``timesteps: inference`` one of the
    sampler's step times each (``step_times(inference_steps, K, extra_steps)``), where the student is queried."""
    if s.timesteps == "inference":
        times = step_times(s.inference_steps, s.num_windows, s.extra_steps).float().to(device)
        return times[torch.randint(0, len(times), (batch,), generator=generator, device=device)]
    return sample_t(batch, generator, device)


@torch.no_grad()
def teacher_endpoint(teacher, batch: dict[str, Tensor], w, s: DistillSettings, schedule,
                     keep_audio: Tensor, keep_ref: Tensor, scales: Tensor | None) -> Tensor:
    """Eq. 2: ẑ_e = Φ(z_s, t_s → t_e) by N DDIM steps of the frozen teacher (three Eq. 9 branches as one batch
    when guided)."""
    motion = batch["motion"] if batch["motion"].shape[1] > 0 else None
    portrait = batch_portrait(batch)
    guidance = None if scales is None else Guidance(scales[:, 0], scales[:, 1])
    if guidance is not None and portrait is not None and teacher.identity_proj is not None:
        # identity tokens differ per branch: each branch's views encoded with its own, as Hallo encodes them
        bank = teacher.encode_guidance_bank(batch["ref"], motion, portrait.face_embeds,
                                            [kr for _, kr in guidance.branches])
    else:
        bank = teacher.encode_portrait_bank(batch["ref"], motion, portrait, keep_ref)
    model_fn = teacher.model_fn(bank, batch["audio"], portrait=portrait)
    if guidance is not None:
        eps_fn = guided(model_fn, guidance, keep_audio, keep_ref)
    else:
        eps_fn = conditional(model_fn, keep_audio, keep_ref)
    return ddim_solve(eps_fn, w.z_s, w.index_s, w.index_e, s.solver_steps, schedule)


def tcd_loss(student, teacher, batch: dict[str, Tensor], generator: torch.Generator, schedule,
             s: DistillSettings) -> tuple[Tensor, dict]:
    """TCD (fada.diffusion.tcd): ‖f_θ(x_t, t, s) − f_θ⁻(x̂_t', t', s)‖², x̂_t' one DDIM step of the guidance-1
    teacher on the student's own dropped conditions (like Balanced: multi-CFG is applied at sampling); at the
    grid's start the target is the teacher's own jump to s."""
    from fada.diffusion import add_noise, consistency_jump, sample_tcd

    x0 = batch["x0"]
    B, device = x0.shape[0], x0.device
    smp = sample_tcd(B, generator, device, s.tcd_original_steps, schedule.num_train_timesteps)
    eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    x_t = add_noise(x0, eps, schedule.ab(smp.t))
    keep_audio, keep_ref = s.dropout.sample(B, generator, device)
    motion = batch["motion"] if batch["motion"].shape[1] > 0 else None

    portrait = batch_portrait(batch)

    def student_eps(z, t):
        return student(z, t.float(), batch["audio"], None, keep_audio=keep_audio, keep_ref=keep_ref,
                       ref_latents=batch["ref"], motion_latents=motion, portrait=portrait)

    with torch.no_grad():
        bank = teacher.encode_portrait_bank(batch["ref"], motion, portrait, keep_ref)
        eps_te = teacher.model_fn(bank, batch["audio"], portrait=portrait)(x_t, smp.t.float(), keep_audio, keep_ref)
        first = smp.t_prev < 0
        t_prev = smp.t_prev.clamp(min=0)
        x_prev = consistency_jump(x_t, eps_te, smp.t, t_prev, schedule)  # one DDIM step of the teacher (Eq. 2, N = 1)
        target = consistency_jump(x_prev, student_eps(x_prev, t_prev), t_prev, smp.s, schedule)  # θ⁻: no gradient
        start = consistency_jump(x_t, eps_te, smp.t, smp.s, schedule)
        target = torch.where(first.reshape(-1, *([1] * (x0.ndim - 1))), start, target)
    pred = consistency_jump(x_t, student_eps(x_t, smp.t), smp.t, smp.s, schedule)
    per = per_sample_mse(pred, target)
    return per.mean(), {"l_distill": float(per.mean().detach()), "first_frac": float(first.float().mean())}


def distill_loss(student, teacher, batch: dict[str, Tensor], generator: torch.Generator, schedule,
                 s: DistillSettings) -> tuple[Tensor, dict]:
    """One distillation step's loss (the module docstring) in the teacher's parametrisation ``schedule`` (a
    ``NoiseSchedule``): targets and predictions are ε or v alike. Corrupted motion frames (``motion_augment``)
    are drawn first, and teacher and student both see them."""
    if s.motion_noise > 0 or s.motion_to_ref > 0:
        batch = dict(batch, motion=augment_motion(batch["motion"], batch["ref"], generator, s.motion_noise,
                                                  s.motion_to_ref))
    if s.variant == "tcd":
        return tcd_loss(student, teacher, batch, generator, schedule, s)
    x0 = batch["x0"]
    B, device = x0.shape[0], x0.device
    t = sample_distill_t(B, s, generator, device)
    eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    w = perflow_window(x0, eps, t, s.num_windows, schedule)

    if s.guided_teacher:
        keep_audio = keep_ref = torch.ones(B, dtype=torch.bool, device=device)
        scales = sample_scales(B, s, generator, device)
    else:
        keep_audio, keep_ref = s.dropout.sample(B, generator, device)
        scales = None
    z_hat_e = teacher_endpoint(teacher, batch, w, s, schedule, keep_audio, keep_ref, scales)
    z_t, eps_hat = perflow_target(w, z_hat_e)

    use_gt = s.mixed_mode != "off"
    if use_gt:
        z_gt, eps_gt = perflow_target(w, ground_truth_endpoint(x0, eps, w.ab_e))
        z_in, target = torch.cat([z_t, z_gt]), torch.cat([eps_hat, eps_gt])
    else:
        z_in, target = z_t, eps_hat
    rep = 2 if use_gt else 1

    def tile(x):
        return None if x is None else torch.cat([x] * rep)

    motion = batch["motion"] if batch["motion"].shape[1] > 0 else None
    student_scales = tile(scales) if s.student_cfg_mode != "none" else None
    portrait = batch_portrait(batch)
    pred = student(z_in, tile(w.timestep), tile(batch["audio"]), None, keep_audio=tile(keep_audio),
                   keep_ref=tile(keep_ref), cfg_scales=student_scales, ref_latents=tile(batch["ref"]),
                   motion_latents=tile(motion), portrait=None if portrait is None else portrait.tile(rep))
    per = per_sample_mse(pred, target, s.pixel_weight)
    weight = getattr(student, "module", student).eps_loss_weight(tile(w.timestep), tile(keep_ref))  # precond nets
    if weight is not None:  # the same per-sample factor on both terms: R = L_GT / L_distill is unchanged
        per = per * weight.to(per.dtype)
    if s.variant == "rflow":  # velocity target: the ε error rescaled to the velocity error (see velocity_weight)
        per = per * tile(velocity_weight(w.t, s.num_windows, schedule).to(per.device, per.dtype))
    l_distill = per[:B]
    if not use_gt:
        total = l_distill.mean()
        return total, {"l_distill": float(l_distill.mean().detach())}
    l_gt = per[B:]
    total, stats = mixed_loss(l_distill, l_gt, s.mixed_mode, **s.mixed_kwargs)
    r = stats["ratio"].float()
    return total, {"l_distill": float(l_distill.mean().detach()), "l_gt": float(l_gt.mean().detach()),
                   "w_mean": float(stats["w_mean"]), "w_zero_frac": float(stats["w_zero_frac"]),
                   "r_median": float(r.median()), "r_min": float(r.min()), "r_max": float(r.max())}
