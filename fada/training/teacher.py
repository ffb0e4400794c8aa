"""The teacher's training objective (paper Eq. 1) with the condition dropout that teaches multi-CFG's branches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fada.data.face_conditions import batch_portrait
from fada.diffusion import add_noise, per_sample_mse, sample_train_timesteps
from fada.training.motion_augment import augment_motion


@dataclass(frozen=True)
class TimestepSampling:
    kind: str = "uniform"
    """'uniform' (Eq. 1) or 'lognormal' in σ (see fada.diffusion.sample_train_timesteps)."""
    mean: float = -1.2
    """Mean of ln σ for 'lognormal'."""
    std: float = 1.2
    """Standard deviation of ln σ for 'lognormal'."""


def region_weight_map(height: int, width: int, box, extra: float) -> Tensor:
    """(height, width) loss weights, mean 1: 1 + extra × (the share of each cell inside ``box``), ``box`` =
    (x0, y0, x1, y1) as fractions of the frame, then divided by its mean so the loss keeps its scale."""

    def cover(n: int, lo: float, hi: float) -> Tensor:
        edges = torch.arange(n + 1, dtype=torch.float64) / n
        return ((torch.minimum(edges[1:], torch.tensor(hi)) - torch.maximum(edges[:-1], torch.tensor(lo)))
                .clamp(min=0) * n)

    x0, y0, x1, y1 = (float(v) for v in box)
    w = 1.0 + float(extra) * cover(height, y0, y1)[:, None] * cover(width, x0, x1)[None, :]
    return (w / w.mean()).float()


def mouth_weight_map(latent_shape, box, extra: float) -> Tensor | None:
    """``region_weight_map`` over the last two dims of ``latent_shape`` for ``teacher.mouth_weight`` /
    ``distill.mouth_weight``; None when ``extra`` is 0 (the paper's unweighted losses)."""
    if extra <= 0:
        return None
    h, w = latent_shape[-2:]
    return region_weight_map(h, w, box, extra)


@dataclass
class ConditionDropout:
    audio_drop: float
    """P(audio dropped, reference kept): the ε_r branch of Eq. 9."""
    ref_drop: float
    """P(audio and reference dropped together): the ε_b branch. The reference is never dropped alone: Eq. 9's
    branches are (audio, ref), (ref) and (none)."""

    def sample(self, batch: int, generator: torch.Generator, device) -> tuple[Tensor, Tensor]:
        """keep_audio, keep_ref: (B,) bool each; one uniform draw per sample decides both, so that a dropped
        reference always comes with dropped audio."""
        u = torch.rand(batch, generator=generator, device=device)
        drop_both = u < self.ref_drop
        drop_audio = drop_both | (u < self.ref_drop + self.audio_drop)
        return ~drop_audio, ~drop_both


def teacher_loss(net, batch: dict[str, Tensor], generator: torch.Generator, schedule,
                 dropout: ConditionDropout, use_audio: bool = True,
                 timesteps: TimestepSampling = TimestepSampling(), pixel_weight: Tensor | None = None,
                 motion_augment=None) -> tuple[Tensor, dict]:
    """Eq. 1: L = ‖ε − ε_tea(z_t, t, c)‖² with z_t = √ᾱ_t x0 + √(1−ᾱ_t) ε and t uniform on the train steps of the
    ``schedule`` (a ``NoiseSchedule``; for a v-prediction net the target is v = √ᾱ_t ε − √(1−ᾱ_t) x0, the same
    loss in its parametrisation). A preconditioned net (``unet.precond_data_var``) weights each sample's error by its
    ``eps_loss_weight(t)``, and ``timesteps`` may draw t log-normally in σ instead (the CPU recipes).

    ``batch``: x0 (B, C, F, h, w), ref (B, C, h, w), motion (B, M, C, h, w), audio (B, F, 2w+1, L, D).
    ``use_audio`` False (stage 1) drops the audio of every sample. ``pixel_weight`` (h, w), mean 1, weights the
    squared error per latent position (``region_weight_map``: the mouth, ``teacher.mouth_weight``).
    ``motion_augment`` (a ``MotionAugmentConfig``) corrupts the motion frames (fada.training.motion_augment).
    """
    x0 = batch["x0"]
    B, device = x0.shape[0], x0.device
    t = sample_train_timesteps(B, generator, schedule, timesteps.kind, timesteps.mean, timesteps.std).to(device)
    eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    ab = schedule.ab(t)
    z_t = add_noise(x0, eps, ab)
    keep_audio, keep_ref = dropout.sample(B, generator, device)
    if not use_audio:
        keep_audio = torch.zeros_like(keep_audio)
    # motion frames are never zeroed: the first clip of a video has the reference as its past, in the dataset
    # (a clip start) and at generation alike, so a zero-motion condition would be one the model never meets
    motion = batch["motion"]
    if motion_augment is not None:  # corrupted motion frames, against the drift of autoregressive generation
        motion = augment_motion(motion, batch["ref"], generator, motion_augment.noise, motion_augment.to_ref)
    pred = net(z_t, t.float(), batch["audio"], None, keep_audio=keep_audio, keep_ref=keep_ref,
               ref_latents=batch["ref"], motion_latents=motion if motion.shape[1] > 0 else None,
               portrait=batch_portrait(batch))
    per = per_sample_mse(pred, schedule.output(x0, eps, ab), pixel_weight)
    weight = getattr(net, "module", net).eps_loss_weight(t, keep_ref)  # DDP wraps the net
    loss = per.mean() if weight is None else (weight.to(per.dtype) * per).mean()
    return loss, {"keep_audio": float(keep_audio.float().mean()), "keep_ref": float(keep_ref.float().mean())}


def teacher_trainable(net, stage) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters trained in each stage (paper §3.1, following EMO/Loopy):
    1: ReferenceNet + the denoising net's spatial layers (not audio, not temporal); 2: audio projection, audio
    cross-attention and temporal layers; 'joint': everything (from-scratch CPU recipes)."""
    from fada.training.trainable import net_attn2, param_group

    frozen = {f"reference_net.{n}" for n in getattr(net, "frozen_reference_parameters", [])}
    attn2 = net_attn2(net)
    out = []
    for name, p in net.named_parameters():
        if name in frozen:
            continue
        group = param_group(name, attn2)
        is_audio, is_temporal = group == "audio", group == "temporal"
        if stage == "joint" or (stage == 1 and not (is_audio or is_temporal)) or (stage == 2 and (is_audio or is_temporal)):
            out.append((name, p))
    return out
