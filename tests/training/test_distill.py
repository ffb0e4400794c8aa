"""fada.training.distill pieces: where in its window a training sample's time falls."""

import pytest
import torch

from fada.training.distill import DistillSettings
from fada.training.teacher import ConditionDropout


def _settings(**kw):
    base = dict(variant="balanced", num_windows=4, solver_steps=4, cfg_audio_range=(1.0, 8.0),
                cfg_ref_range=(1.0, 4.0), dropout=ConditionDropout(0.0, 0.0), mixed_mode="off",
                mixed_kwargs={}, student_cfg_mode="none")
    base.update(kw)
    return DistillSettings(**base)


def test_inference_timesteps_are_the_sampler_times():
    from fada.diffusion import sample_t, step_times
    from fada.training.distill import sample_distill_t

    s = _settings(timesteps="inference", inference_steps=6)
    t = sample_distill_t(600, s, torch.Generator().manual_seed(0))
    assert sorted(set(t.tolist())) == pytest.approx([0.25, 0.5, 0.625, 0.75, 0.875, 1.0])
    assert set(t.tolist()) == set(step_times(6, 4).float().tolist())
    u = sample_distill_t(5, _settings(timesteps="uniform"), torch.Generator().manual_seed(1))
    assert torch.equal(u, sample_t(5, torch.Generator().manual_seed(1)))  # the PeRFlow default is unchanged


def test_inference_timesteps_follow_the_extra_steps():
    from fada.training.distill import sample_distill_t

    s = _settings(timesteps="inference", inference_steps=6, extra_steps="late")
    t = sample_distill_t(600, s, torch.Generator().manual_seed(0))
    assert sorted(set(t.tolist())) == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.75, 1.0])


def test_settings_carry_the_timesteps():
    from fada.config.schema import DistillConfig

    s = DistillSettings.from_config(DistillConfig(timesteps="inference", inference_steps=8, extra_steps="late"),
                                    "none")
    assert (s.timesteps, s.inference_steps, s.extra_steps) == ("inference", 8, "late")
    assert DistillSettings.from_config(DistillConfig(), "tokens").timesteps == "uniform"


# ---- distill_loss against an independent computation --------------------------------------------------------------

class FakeTeacher:
    """ε = 0.1·z + 0.3·keep_audio + 0.2·keep_ref per sample; records the batch rows of every pass."""

    def __init__(self):
        self.rows = []

    def encode_bank(self, ref, motion):
        return None

    def encode_portrait_bank(self, ref, motion, portrait, keep_ref=None):
        return None

    def model_fn(self, bank, audio, portrait=None):
        def fn(z, t, keep_audio=None, keep_ref=None):
            self.rows.append(z.shape[0])
            ka = keep_audio.float().reshape(-1, 1, 1, 1, 1)
            kr = keep_ref.float().reshape(-1, 1, 1, 1, 1)
            return 0.1 * z + 0.3 * ka + 0.2 * kr
        return fn


class FakeStudent(torch.nn.Module):
    """Predicts ε = w·z (one weight); records what it was given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, z, t, audio, bank, keep_audio=None, keep_ref=None, cfg_scales=None, ref_latents=None,
                motion_latents=None, portrait=None):
        self.calls.append(dict(z=z.detach().clone(), t=t, keep_audio=keep_audio, keep_ref=keep_ref,
                               cfg_scales=cfg_scales))
        return self.w * z

    def eps_loss_weight(self, t, keep_ref):
        return None


def _batch(B=3):
    g = torch.Generator().manual_seed(7)
    return {"x0": torch.randn(B, 4, 2, 3, 3, generator=g), "ref": torch.zeros(B, 4, 3, 3),
            "motion": torch.zeros(B, 0, 4, 3, 3), "audio": torch.zeros(B, 2, 1, 1, 1)}


def _expected(variant, batch, seed, s):
    """The loss by hand: the same draws in the same order, Eq. 9 written out, the two halves as documented."""
    from fada.diffusion import NoiseSchedule, ddim_solve, ground_truth_endpoint, perflow_target, perflow_window

    ac = NoiseSchedule()
    x0 = batch["x0"]
    B = x0.shape[0]
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, 1001, (B,), generator=g).float() / 1000
    eps = torch.randn(x0.shape, generator=g)
    w = perflow_window(x0, eps, t, s.num_windows, ac)
    if variant == "fast":
        u = torch.rand(B, 2, generator=g)
        scales = torch.tensor([1.0, 1.0]) + u * torch.tensor([7.0, 3.0])
        ca, cr = scales[:, 0].reshape(-1, 1, 1, 1, 1), scales[:, 1].reshape(-1, 1, 1, 1, 1)

        def eps_fn(z, tt):  # Eq. 9: ε_b + cfg_r(ε_r − ε_b) + cfg_a(ε_a − ε_r)
            e_a, e_r, e_b = 0.1 * z + 0.5, 0.1 * z + 0.2, 0.1 * z
            return e_b + cr * (e_r - e_b) + ca * (e_a - e_r)
    else:  # guidance 1 on the student's own conditions: nothing dropped at rates 0
        scales = None

        def eps_fn(z, tt):
            return 0.1 * z + 0.5
    z_t, eps_hat = perflow_target(w, ddim_solve(eps_fn, w.z_s, w.index_s, w.index_e, s.solver_steps, ac))
    z_gt, eps_gt = perflow_target(w, ground_truth_endpoint(x0, eps, w.ab_e))
    return z_t, eps_hat, z_gt, eps_gt, scales


@pytest.mark.parametrize("variant", ["balanced", "fast", "rflow"])
def test_distill_loss_pairs_inputs_targets_and_scales(variant):
    from fada.diffusion import NoiseSchedule
    from fada.training.distill import distill_loss

    s = _settings(variant=variant, num_windows=1 if variant == "rflow" else 4,
                  student_cfg_mode="tokens" if variant == "fast" else "none", mixed_mode="fixed",
                  mixed_kwargs=dict(s=0.25, w0=0.2, r_peak=30.0, r_dead=100.0, fixed=0.5))
    batch, teacher, student = _batch(), FakeTeacher(), FakeStudent()
    loss, _ = distill_loss(student, teacher, batch, torch.Generator().manual_seed(11), NoiseSchedule(), s)
    z_t, eps_hat, z_gt, eps_gt, scales = _expected(variant, batch, 11, s)
    B = batch["x0"].shape[0]
    # the guided teacher runs its three Eq. 9 branches as one batch of 3B; Balanced and RFlow one pass of B
    assert set(teacher.rows) == {3 * B if variant == "fast" else B}
    call = student.calls[-1]
    torch.testing.assert_close(call["z"][:B], z_t, rtol=1e-5, atol=1e-5)  # first half: the teacher-supervised input
    torch.testing.assert_close(call["z"][B:], z_gt, rtol=1e-5, atol=1e-5)  # second half: the ground-truth one
    if variant == "fast":  # the student is told exactly the scales the teacher was guided with, in both halves
        torch.testing.assert_close(call["cfg_scales"], torch.cat([scales, scales]))
    else:
        assert call["cfg_scales"] is None
    l_d = ((0.5 * z_t - eps_hat) ** 2).flatten(1).mean(1)
    l_gt = ((0.5 * z_gt - eps_gt) ** 2).flatten(1).mean(1)
    if variant == "rflow":  # velocity target: both halves rescaled alike
        from fada.diffusion import velocity_weight

        g = torch.Generator().manual_seed(11)
        t = torch.randint(1, 1001, (B,), generator=g).float() / 1000
        vw = velocity_weight(t, 1, NoiseSchedule())
        l_d, l_gt = l_d * vw, l_gt * vw
    torch.testing.assert_close(loss, (l_d + 0.5 * l_gt).mean().float(), rtol=1e-4, atol=1e-6)  # Eq. 7, W = 0.5


def test_mouth_weight_weights_both_terms_by_one_map():
    """distill.mouth_weight: every squared error of L_distill and L_GT times the same (h, w) map, so that R and W(R)
    see the weighted errors (checked against the hand computation, with mode 'adaptive')."""
    from fada.diffusion import NoiseSchedule, mixed_weight
    from fada.training.distill import distill_loss
    from fada.training.teacher import region_weight_map

    pw = region_weight_map(3, 3, (0.34, 0.57, 0.66, 0.77), 20.0)
    kw = dict(s=0.25, w0=0.2, r_peak=30.0, r_dead=100.0, fixed=0.2)
    s = _settings(variant="balanced", mixed_mode="adaptive", mixed_kwargs=kw, pixel_weight=pw)
    batch, student = _batch(), FakeStudent()
    loss, _ = distill_loss(student, FakeTeacher(), batch, torch.Generator().manual_seed(11), NoiseSchedule(), s)
    z_t, eps_hat, z_gt, eps_gt, _ = _expected("balanced", batch, 11, s)
    l_d = ((0.5 * z_t - eps_hat) ** 2 * pw).flatten(1).mean(1)
    l_gt = ((0.5 * z_gt - eps_gt) ** 2 * pw).flatten(1).mean(1)
    w = mixed_weight(l_gt / l_d, "adaptive", **kw)
    torch.testing.assert_close(loss, (l_d + w * l_gt).mean().float(), rtol=1e-4, atol=1e-6)
    unweighted, _ = distill_loss(FakeStudent(), FakeTeacher(), batch, torch.Generator().manual_seed(11),
                                 NoiseSchedule(), _settings(variant="balanced", mixed_mode="adaptive",
                                                            mixed_kwargs=kw))
    assert abs(float(unweighted) - float(loss)) > 1e-4  # the map changed the loss


def test_rflow_distils_the_unguided_teacher():
    assert not _settings(variant="rflow").guided_teacher and not _settings(variant="balanced").guided_teacher
    assert _settings(variant="fast").guided_teacher


def test_tcd_loss_against_a_hand_computation():
    """TCD's target: one teacher DDIM step t → t', then the stop-gradient student's jump t' → s (the teacher's own
    jump to s at the grid's start); the prediction: the student's jump t → s. Written out in float64."""
    from fada.diffusion import NoiseSchedule
    from fada.training.distill import distill_loss

    ac = NoiseSchedule().alphas_cumprod.double()
    s = _settings(variant="tcd", tcd_original_steps=50)
    batch, teacher, student = _batch(B=6), FakeTeacher(), FakeStudent()
    loss, _ = distill_loss(student, teacher, batch, torch.Generator().manual_seed(5), NoiseSchedule(), s)
    x0 = batch["x0"].double()
    g = torch.Generator().manual_seed(5)
    n = torch.randint(0, 50, (6,), generator=g)
    u = torch.rand(6, generator=g)
    eps = torch.randn(batch["x0"].shape, generator=g).double()
    t = (n + 1) * 20 - 1
    tp = torch.where(n > 0, n * 20 - 1, torch.full_like(n, -1))
    sj = torch.floor(u * (tp.clamp(min=0) + 1).float()).long().clamp(max=tp.clamp(min=0))

    def a(i):
        return ac[i].reshape(-1, 1, 1, 1, 1)

    def jump(x, e, fr, to):
        return a(to).sqrt() * (x - (1 - a(fr)).sqrt() * e) / a(fr).sqrt() + (1 - a(to)).sqrt() * e

    x_t = a(t).sqrt() * x0 + (1 - a(t)).sqrt() * eps
    e_te = 0.1 * x_t + 0.5  # nothing dropped: both conditions kept
    x_p = jump(x_t, e_te, t, tp.clamp(min=0))
    first = (tp < 0).reshape(-1, 1, 1, 1, 1)
    target = torch.where(first, jump(x_t, e_te, t, sj), jump(x_p, 0.5 * x_p, tp.clamp(min=0), sj))
    pred = jump(x_t, 0.5 * x_t, t, sj)
    assert teacher.rows == [6]  # one unguided pass
    torch.testing.assert_close(loss.double(), ((pred - target) ** 2).mean(), rtol=1e-4, atol=1e-7)


def test_teacher_and_student_see_the_same_corrupted_motion_frames():
    """motion_augment: the teacher's targets and the student's prediction are conditioned on one corrupted copy."""
    from fada.diffusion import NoiseSchedule
    from fada.training.distill import distill_loss

    seen = []

    class MotionTeacher(FakeTeacher):
        def encode_portrait_bank(self, ref, motion, portrait, keep_ref=None):
            seen.append(("teacher", motion))

    class MotionStudent(FakeStudent):
        def forward(self, z, t, audio, bank, motion_latents=None, **kw):
            seen.append(("student", motion_latents))
            return super().forward(z, t, audio, bank, **kw)

    batch = _batch()
    batch["motion"] = torch.zeros(3, 1, 4, 3, 3)
    batch["ref"] = torch.ones(3, 4, 3, 3)
    s = _settings(variant="balanced", mixed_mode="off", motion_noise=0.5, motion_to_ref=0.0)
    distill_loss(MotionStudent(), MotionTeacher(), batch, torch.Generator().manual_seed(1), NoiseSchedule(), s)
    (who_t, m_t), (who_s, m_s) = seen
    assert (who_t, who_s) == ("teacher", "student")
    assert torch.equal(m_t, m_s) and not torch.equal(m_t, batch["motion"]) and m_t.abs().max() < 0.5 * 6
    seen.clear()
    s = _settings(variant="balanced", mixed_mode="off")
    distill_loss(MotionStudent(), MotionTeacher(), batch, torch.Generator().manual_seed(1), NoiseSchedule(), s)
    assert all(torch.equal(m, batch["motion"]) for _, m in seen)
