"""The teacher objective's pieces: the mouth-weighted error map and how teacher_loss applies it."""

import numpy as np
import pytest
import torch

from fada.training.teacher import ConditionDropout, region_weight_map, teacher_loss


def _brute_force_map(h, w, box, extra, sub=4000):
    """Cell coverage by point sampling each row and column of cells sub times (a box is a product of two
    intervals, so its cover of a cell is the product of the two 1-D covers): independent of the interval arithmetic."""
    x0, y0, x1, y1 = box

    def cover(n, lo, hi):
        c = (np.arange(n * sub) + 0.5) / (n * sub)
        return ((c >= lo) & (c < hi)).reshape(n, sub).mean(1)

    m = 1.0 + extra * np.outer(cover(h, y0, y1), cover(w, x0, x1))
    return m / m.mean()


@pytest.mark.parametrize("h,w,box,extra", [(16, 16, (0.34, 0.57, 0.66, 0.77), 4.0), (8, 12, (0.0, 0.5, 0.3, 1.0), 9.0),
                                           (5, 7, (0.11, 0.2, 0.93, 0.41), 0.5)])
def test_region_weight_map_matches_supersampled_coverage(h, w, box, extra):
    got = region_weight_map(h, w, box, extra).numpy()
    assert got.shape == (h, w)
    np.testing.assert_allclose(got, _brute_force_map(h, w, box, extra), atol=2e-3)
    assert got.mean() == pytest.approx(1.0, abs=1e-6)


def test_region_weight_map_without_extra_is_uniform():
    assert torch.equal(region_weight_map(6, 4, (0.2, 0.2, 0.8, 0.8), 0.0), torch.ones(6, 4))


class _ConstNet(torch.nn.Module):
    """Predicts a fixed tensor: the loss is then a known function of the noise the loss draws."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, z, t, audio, bank, keep_audio=None, keep_ref=None, ref_latents=None, motion_latents=None,
                portrait=None):
        return self.out

    def eps_loss_weight(self, t, keep_ref=None):
        return None


def test_teacher_loss_weights_the_error_per_position():
    B, C, F, h, w = 2, 3, 2, 4, 4
    batch = {"x0": torch.zeros(B, C, F, h, w), "ref": torch.zeros(B, C, h, w), "motion": torch.zeros(B, 1, C, h, w),
             "audio": torch.zeros(B, F, 1, 1, 1)}
    pred = torch.randn(B, C, F, h, w, generator=torch.Generator().manual_seed(3))
    weight = region_weight_map(h, w, (0.5, 0.5, 1.0, 1.0), 3.0)
    from fada.diffusion import NoiseSchedule

    ac = NoiseSchedule()
    drop = ConditionDropout(0.0, 0.0)
    loss, _ = teacher_loss(_ConstNet(pred), batch, torch.Generator().manual_seed(0), ac, drop, pixel_weight=weight)
    plain, _ = teacher_loss(_ConstNet(pred), batch, torch.Generator().manual_seed(0), ac, drop)
    # the same draws as teacher_loss: t (B,), then the noise
    g = torch.Generator().manual_seed(0)
    torch.randint(0, 1000, (B,), generator=g)
    eps = torch.randn(batch["x0"].shape, generator=g)
    err = (pred - eps) ** 2
    assert loss.item() == pytest.approx((err * weight).mean().item(), rel=1e-5)
    assert plain.item() == pytest.approx(err.mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx(plain.item(), rel=1e-3)


def test_teacher_loss_targets_v_for_a_v_prediction_schedule():
    """Eq. 1 in the v parametrisation: the target is v = √ᾱ_t·ε − √(1−ᾱ_t)·x0, written out from the same draws."""
    from fada.diffusion import NoiseSchedule

    sched = NoiseSchedule(beta_schedule="linear", prediction_type="v_prediction", timestep_spacing="trailing",
                          set_alpha_to_one=True, rescale_betas_zero_snr=True)
    B, C, F, h, w = 3, 2, 2, 4, 4
    g0 = torch.Generator().manual_seed(7)
    batch = {"x0": torch.randn(B, C, F, h, w, generator=g0), "ref": torch.zeros(B, C, h, w),
             "motion": torch.zeros(B, 0, C, h, w), "audio": torch.zeros(B, F, 1, 1, 1)}
    pred = torch.randn(B, C, F, h, w, generator=g0)
    loss, _ = teacher_loss(_ConstNet(pred), batch, torch.Generator().manual_seed(1), sched, ConditionDropout(0, 0))
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (B,), generator=g)
    eps = torch.randn(batch["x0"].shape, generator=g)
    ab = sched.alphas_cumprod.double()[t].view(B, 1, 1, 1, 1)
    v = ab.sqrt() * eps.double() - (1 - ab).sqrt() * batch["x0"].double()
    assert loss.item() == pytest.approx(((pred.double() - v) ** 2).mean().item(), rel=1e-5)


def test_default_mouth_box_is_where_curate_puts_the_mouth():
    from fada.config.schema import CurateConfig, TeacherConfig
    from fada.curation.scores import mouth_box_in_crop

    margin = CurateConfig().face_margin
    np.testing.assert_allclose(TeacherConfig().mouth_box, mouth_box_in_crop(margin), atol=0.01)


def test_condition_dropout_rates_over_many_draws():
    """P(audio only dropped) = audio_drop, P(both dropped) = ref_drop, and the reference is never dropped alone."""
    n = 200_000
    keep_audio, keep_ref = ConditionDropout(0.15, 0.1).sample(n, torch.Generator().manual_seed(0), "cpu")
    only_audio = (~keep_audio & keep_ref).float().mean().item()
    both = (~keep_audio & ~keep_ref).float().mean().item()
    assert only_audio == pytest.approx(0.15, abs=0.005) and both == pytest.approx(0.1, abs=0.005)
    assert not (keep_audio & ~keep_ref).any()  # reference dropped implies audio dropped
    ka, kr = ConditionDropout(0.0, 0.0).sample(1000, torch.Generator().manual_seed(1), "cpu")
    assert ka.all() and kr.all()
