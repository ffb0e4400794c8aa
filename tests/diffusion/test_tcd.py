"""TCD (the Table 2 baseline): its grid is diffusers' TCDScheduler's, its consistency function a DDIM jump, and
its training draws stay on the grid."""

import numpy as np
import torch

from fada.diffusion import NoiseSchedule, consistency_jump, sample_tcd, tcd_grid


def test_grid_is_the_one_diffusers_tcd_samples_on():
    from diffusers import TCDScheduler

    sched = TCDScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         original_inference_steps=50)
    sched.set_timesteps(50)
    assert sorted(sched.timesteps.tolist()) == tcd_grid(50).tolist()
    sched.set_timesteps(6)
    assert set(sched.timesteps.tolist()) <= set(tcd_grid(50).tolist())


def test_consistency_jump_is_the_ddim_formula_in_float64():
    sched = NoiseSchedule()
    ac = sched.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(3, 4, 2, 5, 5, generator=g), torch.randn(3, 4, 2, 5, 5, generator=g)
    t, s = torch.tensor([999, 500, 19]), torch.tensor([0, 250, 19])
    got = consistency_jump(x, e, t, s, sched)
    for i in range(3):  # by hand, per sample, in numpy float64
        at, as_ = float(ac[t[i]]), float(ac[s[i]])
        xi, ei = x[i].double().numpy(), e[i].double().numpy()
        x0 = (xi - np.sqrt(1 - at) * ei) / np.sqrt(at)
        np.testing.assert_allclose(got[i].double().numpy(), np.sqrt(as_) * x0 + np.sqrt(1 - as_) * ei,
                                   rtol=1e-4, atol=1e-5)
    # jumping to where you are changes nothing; the exact ε recovers x0 at s = 0 up to ᾱ_0
    torch.testing.assert_close(consistency_jump(x, e, t, t, sched), x, rtol=1e-5, atol=1e-5)


def test_training_draws_stay_on_the_grid():
    smp = sample_tcd(20_000, torch.Generator().manual_seed(1), original_steps=50)
    grid = tcd_grid(50)
    assert torch.isin(smp.t, grid).all()
    first = smp.t == grid[0]
    assert (smp.t_prev[first] == -1).all() and (smp.s[first] == 0).all()
    rest = ~first
    assert torch.isin(smp.t_prev[rest], grid).all() and (smp.t[rest] - smp.t_prev[rest] == 20).all()
    assert (smp.s >= 0).all() and (smp.s[rest] <= smp.t_prev[rest]).all()
    frac = (smp.s[rest].float() / smp.t_prev[rest].float()).mean().item()  # s uniform in [0, t']
    assert abs(frac - 0.5) < 0.02
