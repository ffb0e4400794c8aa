"""Motion-frame corruption in training: what the net is given, how often, how strong; off means untouched."""

import pytest
import torch

from fada.training.motion_augment import augment_motion


def _batch(B=4000, M=1, C=3, h=4, w=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, M, C, h, w, generator=g), 5.0 + torch.randn(B, C, h, w, generator=g)


def test_off_returns_the_motion_frames_and_draws_nothing():
    motion, ref = _batch(8)
    g = torch.Generator().manual_seed(3)
    assert augment_motion(motion, ref, g) is motion
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())


def test_every_sample_swapped_for_its_reference_without_noise():
    motion, ref = _batch(6, M=2)
    out = augment_motion(motion, ref, torch.Generator().manual_seed(1), noise=0.0, to_ref=1.0)
    assert torch.equal(out, ref[:, None].expand(6, 2, *ref.shape[1:]))


def test_swap_rate_and_noise_strengths_over_many_samples():
    """Swapped samples are the reference (mean 5 here) plus noise; each sample's noise std is one draw, uniform on
    [0, noise]: measured per sample from its residual against whichever frame it started from."""
    motion, ref = _batch()
    out = augment_motion(motion, ref, torch.Generator().manual_seed(2), noise=0.3, to_ref=0.25)
    swapped = (out - ref[:, None]).abs().mean(dim=(1, 2, 3, 4)) < (out - motion).abs().mean(dim=(1, 2, 3, 4))
    assert swapped.float().mean().item() == pytest.approx(0.25, abs=0.03)
    base = torch.where(swapped.reshape(-1, 1, 1, 1, 1), ref[:, None].expand_as(motion), motion)
    std = (out - base).flatten(1).std(dim=1)
    assert std.max().item() < 0.3 * 1.4  # 48 values per sample: a sample std scatters around its draw
    # uniform on [0, 0.3]: mean 0.15, and as many samples below 0.1 as above 0.2
    assert std.mean().item() == pytest.approx(0.15, abs=0.01)
    assert (std < 0.1).float().mean().item() == pytest.approx((std > 0.2).float().mean().item(), abs=0.05)


def test_teacher_loss_gives_the_net_the_corrupted_frames():
    from fada.config.schema import MotionAugmentConfig
    from fada.diffusion import NoiseSchedule
    from fada.training.teacher import ConditionDropout, teacher_loss

    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, z, t, audio, bank, motion_latents=None, **kw):
            seen["motion"] = motion_latents
            return torch.zeros_like(z)

        def eps_loss_weight(self, t, keep_ref=None):
            return None

    B, C, F, h, w = 3, 2, 2, 4, 4
    batch = {"x0": torch.zeros(B, C, F, h, w), "ref": torch.ones(B, C, h, w), "motion": torch.zeros(B, 1, C, h, w),
             "audio": torch.zeros(B, F, 1, 1, 1)}
    drop = ConditionDropout(0.0, 0.0)
    teacher_loss(Spy(), batch, torch.Generator().manual_seed(0), NoiseSchedule(), drop)
    assert torch.equal(seen["motion"], batch["motion"])
    teacher_loss(Spy(), batch, torch.Generator().manual_seed(0), NoiseSchedule(), drop,
                 motion_augment=MotionAugmentConfig(noise=0.0, to_ref=1.0))
    assert torch.equal(seen["motion"], torch.ones(B, 1, C, h, w))
