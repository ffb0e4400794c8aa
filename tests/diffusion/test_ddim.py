import pytest
import torch
from diffusers import DDIMScheduler

from fada.diffusion import NoiseSchedule, add_noise, ddim_solve, sample_ddim, solve_indices

from .test_schedule import SD15


def toy_eps(z, t):
    # depends on z and on the (per-sample) timestep, so wrong timesteps or ᾱ's show up
    return 0.3 * torch.tanh(z) + (t.float() / 1000).reshape(-1, *[1] * (z.dim() - 1)) * 0.2


@pytest.mark.parametrize("n", [1, 2, 3, 7, 25, 50, 999, 1000])
def test_timesteps_equal_diffusers(n):
    s = DDIMScheduler(**SD15)
    s.set_timesteps(n)
    assert torch.equal(NoiseSchedule().ddim_timesteps(n)[0], s.timesteps)


@pytest.mark.parametrize("n", [1, 4, 25])
def test_sample_ddim_equals_diffusers_stepping(n, gen, sched):
    z0 = torch.randn(2, 4, 8, 8, generator=gen)
    s = DDIMScheduler(**SD15)
    s.set_timesteps(n)
    ref = z0.clone()
    for t in s.timesteps:
        ref = s.step(toy_eps(ref, t.expand(2)), t, ref).prev_sample

    seen = []
    out = sample_ddim(lambda z, t: (seen.append(t.clone()), toy_eps(z, t))[1], z0, n, sched,
                      callback=lambda i, t, z: None)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert [int(t[0]) for t in seen] == s.timesteps.tolist()
    assert all(t.shape == (2,) and t.dtype == torch.float32 for t in seen)


def test_ddim_step_is_exact_for_true_eps(gen):
    x0, eps = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    ab_t, ab_p = torch.tensor([0.01, 0.2, 0.5, 0.7]), torch.tensor([0.3, 0.4, 0.9, 0.7])
    out = NoiseSchedule().ddim_step(add_noise(x0, eps, ab_t), eps, ab_t, ab_p)
    torch.testing.assert_close(out, ab_p.sqrt()[:, None] * x0 + (1 - ab_p).sqrt()[:, None] * eps)


def test_solve_indices_equal_steps_land_exactly():
    idx = solve_indices(999, 749, 8)
    assert idx[0] == 999 and idx[-1] == 749 and len(idx) == 9
    # 999 − 31.25k, rounded (half to even)
    assert idx.tolist() == [999, 968, 936, 905, 874, 843, 812, 780, 749]
    per = solve_indices(torch.tensor([999, 249]), torch.tensor([749, -1]), 5)
    assert per.shape == (6, 2) and per[-1].tolist() == [749, -1] and per[:, 1].tolist() == [249, 199, 149, 99, 49, -1]


@pytest.mark.parametrize("start,end", [(999, 749), (749, 499), (249, 0), (249, -1), (600, 123)])
def test_ddim_solve_lands_on_endpoint_with_true_eps(start, end, ac, sched, gen):
    x0, eps = torch.randn(2, 4, 6, 6, generator=gen), torch.randn(2, 4, 6, 6, generator=gen)
    z_s = ac[start].sqrt() * x0 + (1 - ac[start]).sqrt() * eps
    out = ddim_solve(lambda z, t: eps, z_s, start, end, 8, sched)
    ab_e = ac[max(end, 0)]
    torch.testing.assert_close(out, ab_e.sqrt() * x0 + (1 - ab_e).sqrt() * eps, atol=1e-5, rtol=1e-5)


def test_ddim_solve_per_sample_windows(ac, sched, gen):
    start, end = torch.tensor([999, 749, 499, 249]), torch.tensor([749, 499, 249, 0])
    z = torch.randn(4, 3, 5, 5, generator=gen)
    batched = ddim_solve(toy_eps, z, start, end, 6, sched)
    for i in range(4):
        single = ddim_solve(toy_eps, z[i:i + 1], int(start[i]), int(end[i]), 6, sched)
        torch.testing.assert_close(batched[i:i + 1], single)
    # and with the true ε every sample lands on its own window end
    x0, eps = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    out = ddim_solve(lambda z, t: eps, add_noise(x0, eps, ac[start]), start, end, 8, sched)
    torch.testing.assert_close(out, add_noise(x0, eps, ac[end]), atol=1e-5, rtol=1e-5)


def test_ddim_keeps_half_precision_latents(sched):
    z = torch.randn(1, 2, 4, 4).half()
    out = sample_ddim(lambda z, t: torch.zeros_like(z), z, 3, sched)
    assert out.dtype == torch.float16
