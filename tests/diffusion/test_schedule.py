import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from fada.diffusion import NoiseSchedule, add_noise

SD15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


def test_alphas_cumprod_equals_diffusers_sd15():
    ref = DDIMScheduler(**SD15).alphas_cumprod
    ours = NoiseSchedule().alphas_cumprod
    assert ours.dtype == torch.float32 and ours.shape == (1000,)
    assert torch.equal(ours, ref)


def test_alphas_cumprod_matches_numpy(ac, ac_np):
    np.testing.assert_allclose(ac.numpy(), ac_np, rtol=1e-5)


def test_linear_schedule_equals_diffusers():
    ref = DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02).alphas_cumprod
    assert torch.equal(NoiseSchedule(1000, 1e-4, 0.02, "linear").alphas_cumprod, ref)
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule(beta_schedule="cosine")


def test_t_to_index_rule(sched):
    t = torch.tensor([0.0, 0.0004, 0.001, 0.0016, 0.25, 0.5, 0.75, 0.999, 1.0])
    # round(T·t) − 1: t = 0 (and anything rounding to it) is −1, the clean end past the last DDIM step
    assert sched.t_to_index(t).tolist() == [-1, -1, 0, 1, 249, 499, 749, 998, 999]
    assert sched.t_to_index(1.0).item() == 999


def test_alpha_bar_rule_and_shapes(sched, ac, ac_np):
    t = torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    ab = sched.alpha_bar(t)
    assert ab.shape == (2, 2)
    # ᾱ(t) = ᾱ[round(1000t) − 1]; t = 0 (the clean end) reads ᾱ[0], not 1 (set_alpha_to_one=False)
    np.testing.assert_allclose(ab.numpy(), ac_np[[[0, 249], [499, 999]]], rtol=1e-5)
    assert sched.alpha_bar(0.0) == ac[0] and sched.alpha_bar(0.0) < 1
    # DDIM's "−1 = past the last step" reads the same ᾱ[0]; with set_alpha_to_one it is 1
    assert sched.ab(-1) == sched.alpha_bar(0.0)
    assert float(NoiseSchedule(set_alpha_to_one=True).alpha_bar(0.0)) == 1.0


def test_add_noise_broadcasts_per_sample(gen):
    x0, eps = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    ab = torch.tensor([0.1, 0.5, 0.9])
    z = add_noise(x0, eps, ab)
    for i in range(3):
        a = float(ab[i])
        torch.testing.assert_close(z[i], a**0.5 * x0[i] + (1 - a) ** 0.5 * eps[i])
    torch.testing.assert_close(add_noise(x0, eps, 0.5), 0.5**0.5 * (x0 + eps))


def test_linear_eps_prior_is_the_least_squares_slope():
    """Independent check: regress ε on z_t by least squares over Gaussian x0 of variance s²."""
    from fada.diffusion import NoiseSchedule, add_noise, linear_eps_prior

    sched = NoiseSchedule()
    ac = sched.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    s2 = 0.25
    for t in (10, 500, 999):
        x0 = torch.randn(2_000_000, generator=g, dtype=torch.float64) * s2 ** 0.5
        eps = torch.randn(2_000_000, generator=g, dtype=torch.float64)
        z = add_noise(x0, eps, ac[t].double())
        slope = float((z * eps).sum() / (z * z).sum())
        assert float(linear_eps_prior(torch.tensor([t]), s2, sched)[0]) == pytest.approx(slope, rel=0.02, abs=2e-3)


def test_precond_matches_edm_c_skip_c_out():
    """Independent check: EDM's x̂0 = c_skip·(z/a) + c_out·F (Karras et al. 2022, Table 1, σ = s/a) turned into
    ε̂ = (z − a·x̂0)/s equals c(t)·z − κ(t)·F (the sign of F is a convention of the net)."""
    from fada.diffusion import NoiseSchedule, linear_eps_prior, precond_loss_weight, precond_output_scale

    sched = NoiseSchedule()
    ac = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    sd2 = 0.25
    t = torch.tensor([0, 10, 250, 500, 961, 999])
    z = torch.randn(6, 50, generator=g, dtype=torch.float64)
    f = torch.randn(6, 50, generator=g, dtype=torch.float64)
    a, s = ac[t].sqrt()[:, None], (1 - ac[t]).sqrt()[:, None]
    sigma, sd = s / a, sd2 ** 0.5
    c_skip = sd2 / (sigma ** 2 + sd2)
    c_out = sigma * sd / (sigma ** 2 + sd2).sqrt()
    x0_hat = c_skip * z / a + c_out * f
    eps_edm = (z - a * x0_hat) / s
    c = linear_eps_prior(t, sd2, sched).double()[:, None]
    k = precond_output_scale(t, sd2, sched).double()[:, None]
    torch.testing.assert_close(c * z - k * f, eps_edm, rtol=1e-5, atol=1e-5)
    # the loss weight turns the ε error into the error of F: |ε̂ − ε|²/κ² = |F − F*|²
    torch.testing.assert_close(precond_loss_weight(t, sd2, sched).double(), 1 / k[:, 0] ** 2, rtol=1e-6, atol=0)
    assert 0 < float(k[-1]) < 0.1 and float(k[0]) == pytest.approx(1.0, abs=2e-3)


def test_precondition_eps_with_a_reference_mean_is_the_regression_of_eps_on_the_residual():
    """Independent check: for x0 = μ + √v·n (a reference μ and a residual of variance v), the least-squares
    regression of ε on z_t − √ᾱ·μ has slope c(t) with v, and what it leaves has standard deviation κ(t); F = 0
    gives exactly that regression, F the residual scaled by κ; per-sample variances and the μ = None case."""
    from fada.diffusion import NoiseSchedule, add_noise, precondition

    sched = NoiseSchedule()
    ac = sched.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    v, n = 0.02, 1_000_000
    for t in (10, 300, 999):
        mu = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1  # a non-zero-mean "reference"
        x0 = mu + torch.randn(n, generator=g, dtype=torch.float64) * v ** 0.5
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        z = add_noise(x0, eps, ac[t].double())
        r = z - ac[t].double().sqrt() * mu
        slope = float((r * eps).sum() / (r * r).sum())
        left = float((eps - slope * r).std())
        zz, mm = z.float().reshape(1, -1), mu.float().reshape(1, -1)
        lin = precondition(zz, torch.zeros_like(zz), torch.tensor([t]), v, sched, mm)
        torch.testing.assert_close(lin.double(), slope * r.reshape(1, -1), rtol=0.02, atol=2e-3)
        one = precondition(zz[:, :4], torch.ones(1, 4), torch.tensor([t]), v, sched, mm[:, :4]) - lin[:, :4]
        assert float(one[0, 0]) == pytest.approx(left, rel=0.02)
    # per-sample variances, no mean: the zero-mean prior of linear_eps_prior / precond_output_scale
    from fada.diffusion import linear_eps_prior, precond_output_scale

    z, f = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    t, var = torch.tensor([700.0, 40.0]), torch.tensor([0.25, 0.02])
    want = torch.stack([linear_eps_prior(t[i:i + 1], float(var[i]), sched) * z[i] +
                        precond_output_scale(t[i:i + 1], float(var[i]), sched) * f[i] for i in range(2)])
    torch.testing.assert_close(precondition(z, f, t, var, sched), want)


def test_lognormal_timesteps_follow_the_sigma_distribution():
    """P(t <= k) = P(σ <= σ_k) = Φ((ln σ_k − mean)/std), checked against scipy's normal CDF."""
    from scipy.stats import norm

    from fada.diffusion import NoiseSchedule, sample_train_timesteps

    sched = NoiseSchedule()
    ac = sched.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    t = sample_train_timesteps(200_000, g, sched, "lognormal", -1.2, 1.2)
    assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= 999
    sigma = ((1 - ac) / ac).sqrt().double()
    for k in (50, 200, 400, 700):
        want = norm.cdf((np.log(float(sigma[k])) + 1.2) / 1.2)
        assert float((t <= k).double().mean()) == pytest.approx(want, abs=0.01)
    u = sample_train_timesteps(50_000, torch.Generator().manual_seed(0), sched)
    assert abs(float(u.double().mean()) - 499.5) < 5
    with pytest.raises(ValueError, match="timestep sampling"):
        sample_train_timesteps(2, g, sched, "cosine")


def test_precondition_v_is_the_regression_of_v_on_the_residual():
    """Independent check for a v net: F = 0 gives v̂ = (√ᾱ·z − x̂0)/√(1−ᾱ) with x̂0 the least-squares regression of
    x0 on z − √ᾱ·μ (plus μ); F = 1 adds the standard deviation of what it leaves; at ᾱ = 0 (zero terminal SNR) it
    is −μ ± √var. The loss weight makes the error uniform in F."""
    from fada.diffusion import NoiseSchedule, add_noise, precond_loss_weight, precondition

    sched = NoiseSchedule(beta_schedule="linear", prediction_type="v_prediction", timestep_spacing="trailing",
                          set_alpha_to_one=True, rescale_betas_zero_snr=True)
    ac = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    v, n = 0.02, 1_000_000
    for t in (10, 300, 999):
        mu = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
        x0 = mu + torch.randn(n, generator=g, dtype=torch.float64) * v ** 0.5
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        a = ac[t]
        z = add_noise(x0, eps, a)
        vt = a.sqrt() * eps - (1 - a).sqrt() * x0
        r = z - a.sqrt() * mu
        slope = float((r * (x0 - mu)).sum() / (r * r).sum()) if float(a) > 0 else 0.0
        v_lin = (a.sqrt() * z - (mu + slope * r)) / (1 - a).sqrt()
        zz, mm = z.float().reshape(1, -1), mu.float().reshape(1, -1)
        lin = precondition(zz, torch.zeros_like(zz), torch.tensor([t]), v, sched, mm)
        torch.testing.assert_close(lin.double(), v_lin.reshape(1, -1), rtol=0.02, atol=5e-3)
        one = precondition(zz[:, :4], torch.ones(1, 4), torch.tensor([t]), v, sched, mm[:, :4]) - lin[:, :4]
        left = float((vt - v_lin).std())
        assert float(one[0, 0]) == pytest.approx(left, rel=0.02)
        assert float(precond_loss_weight(torch.tensor([t]), v, sched)) == pytest.approx(1 / left ** 2, rel=0.04)
