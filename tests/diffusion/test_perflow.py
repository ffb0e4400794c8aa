import numpy as np
import pytest
import torch

from fada.diffusion import (
    PeRFlowScheduler,
    add_noise,
    perflow_step,
    perflow_target,
    perflow_window,
    sample_perflow,
    sample_t,
    step_times,
    student_input,
    window_coefficients,
    window_of,
    window_target,
)


def np_coefficients(ac_np, t_s, t_e):
    """λ, η re-derived in numpy from the float64 schedule (index rule max(round(1000t) − 1, 0))."""
    ab = lambda t: ac_np[max(round(1000 * t) - 1, 0)]
    lam = np.sqrt(ab(t_e) / ab(t_s))
    return lam, np.sqrt(1 - ab(t_e)) - np.sqrt(1 - ab(t_s)) * lam


def test_window_of():
    t = torch.tensor([1.0, 0.751, 0.75, 0.501, 0.5, 0.25, 0.001])
    t_s, t_e = window_of(t, 4)
    assert t_s.tolist() == [1.0, 1.0, 0.75, 0.75, 0.5, 0.25, 0.25]
    assert t_e.tolist() == [0.75, 0.75, 0.5, 0.5, 0.25, 0.0, 0.0]
    # every grid time m/1000 lies in (t_e, t_s]; window number by integer arithmetic: ⌈mK/1000⌉
    for K in (1, 3, 4, 5, 8):
        m = torch.arange(1, 1001)
        t_s, t_e = window_of(m.float() / 1000, K)
        k = -(-m * K // 1000)
        torch.testing.assert_close(t_s, k.float() / K)
        torch.testing.assert_close(t_e, (k - 1).float() / K)


def test_window_coefficients_against_numpy(sched, ac_np):
    for k in range(4):
        t_s, t_e = 1 - k / 4, 1 - (k + 1) / 4
        lam, eta = window_coefficients(sched.alpha_bar(t_s), sched.alpha_bar(t_e), sched)
        lam_np, eta_np = np_coefficients(ac_np, t_s, t_e)
        assert lam.item() == pytest.approx(lam_np, rel=1e-5)
        assert eta.item() == pytest.approx(eta_np, rel=1e-4, abs=1e-6)


def test_window_target_and_student_input_endpoints(gen):
    z_s, z_e = torch.randn(3, 2, 4, generator=gen), torch.randn(3, 2, 4, generator=gen)
    lam, eta = torch.tensor([2.0, 1.5, 1.1]), torch.tensor([-0.5, 0.3, 0.7])
    eps_hat = window_target(z_e, z_s, lam, eta)
    torch.testing.assert_close(lam[:, None, None] * z_s + eta[:, None, None] * eps_hat, z_e)  # Eq. 4 inverted
    t_s, t_e = torch.tensor([1.0, 0.75, 0.25]), torch.tensor([0.75, 0.5, 0.0])
    torch.testing.assert_close(student_input(z_s, z_e, t_s, t_s, t_e), z_s)
    torch.testing.assert_close(student_input(z_s, z_e, t_e, t_s, t_e), z_e)
    mid = student_input(z_s, z_e, (t_s + t_e) / 2, t_s, t_e)
    torch.testing.assert_close(mid, (z_s + z_e) / 2)


def test_step_times_paper_and_allocation():
    assert step_times(6, 4).tolist() == [1.0, 0.875, 0.75, 0.625, 0.5, 0.25]  # paper §4.1: 2, 2, 1, 1
    assert step_times(4, 4).tolist() == [1.0, 0.75, 0.5, 0.25]
    for n in range(1, 13):
        if n < 4:
            with pytest.raises(ValueError):
                step_times(n, 4)
            continue
        t = step_times(n, 4)
        assert len(t) == n and t[0] == 1.0 and bool((t[1:] < t[:-1]).all())
        for i in range(4):
            m = n // 4 + (i < n % 4)
            in_win = t[(t <= 1 - i / 4) & (t > 1 - (i + 1) / 4)]
            np.testing.assert_allclose(in_win.numpy(), 1 - i / 4 - np.arange(m) * 0.25 / m)


def test_step_times_late_puts_the_extra_steps_nearest_the_data():
    assert step_times(6, 4, "late").tolist() == [1.0, 0.75, 0.5, 0.375, 0.25, 0.125]  # 1, 1, 2, 2
    assert step_times(7, 4, "late").tolist() == [1.0, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]  # 1, 2, 2, 2
    for n in (4, 8, 12):  # no remainder: both placements agree
        assert torch.equal(step_times(n, 4, "late"), step_times(n, 4))
    for n in range(4, 13):  # the windows' step counts are the early ones reversed
        early, late = step_times(n, 4), step_times(n, 4, "late")
        count = lambda t: [int(((t <= 1 - i / 4) & (t > 1 - (i + 1) / 4)).sum()) for i in range(4)]
        assert count(late) == count(early)[::-1] and len(late) == n
    with pytest.raises(ValueError, match="middle"):
        step_times(6, 4, "middle")


def test_sample_t(gen):
    t = sample_t(200_000, gen)
    assert t.dtype == torch.float32 and t.shape == (200_000,)
    m = torch.round(t * 1000)
    assert torch.equal(m / 1000, t) and m.min() == 1 and m.max() == 1000
    assert torch.equal(sample_t(8, torch.Generator().manual_seed(3)), sample_t(8, torch.Generator().manual_seed(3)))


def test_perflow_window_fields(ac, sched, gen):
    x0, eps = torch.randn(4, 2, 3, generator=gen), torch.randn(4, 2, 3, generator=gen)
    w = perflow_window(x0, eps, torch.tensor([0.3, 0.75, 1.0, 0.001]), 4, sched)
    # t_e = 0 is the clean end, index −1 (ᾱ[0] for SD1.5, whose set_alpha_to_one is False)
    assert w.index_s.tolist() == [499, 749, 999, 249] and w.index_e.tolist() == [249, 499, 749, -1]
    assert float(w.ab_e[3]) == float(ac[0])
    assert w.timestep.tolist() == pytest.approx([300.0, 750.0, 1000.0, 1.0])
    torch.testing.assert_close(w.z_s, add_noise(x0, eps, ac[w.index_s]))
    z_t, eps_hat = perflow_target(w, w.z_s)  # degenerate endpoint z_e = z_s: the input stays put
    torch.testing.assert_close(z_t, w.z_s)


class ExactStudent:
    """Returns the exact window target ε̂_k = (e_k − λ_k e_{k−1})/η_k of independently chosen window ends e_k
    (λ, η from numpy), whatever z: the straight path through e_0 → e_1 → … → e_K."""

    def __init__(self, ends, ac_np, K):
        self.ends, self.ac_np, self.K = ends, ac_np, K

    def __call__(self, z, timestep):
        m = int(round(float(timestep[0])))
        k = -(-m * self.K // 1000)  # window number counted from t = 0; window (k−1)/K < t ≤ k/K
        j = self.K - k + 1  # e_{j−1} at t_s = k/K → e_j at t_e
        lam, eta = np_coefficients(self.ac_np, k / self.K, (k - 1) / self.K)
        return ((self.ends[j] - lam * self.ends[j - 1]) / eta).float()


@pytest.mark.parametrize("n,extra", [(4, "early"), (6, "early"), (9, "early"), (6, "late"), (9, "late")])
def test_exact_student_follows_piecewise_linear_path(n, extra, sched, ac_np, gen):
    K = 4
    ends = [torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) for _ in range(K + 1)]
    seen = {}
    out = sample_perflow(ExactStudent(ends, ac_np, K), ends[0].float(), n, sched, K,
                         callback=lambda i, t, z: seen.__setitem__(float(t), z), extra=extra)
    assert sorted(seen, reverse=True) == pytest.approx(step_times(n, K, extra).tolist()[1:] + [0.0])
    for t, z in seen.items():
        j = min(int(np.floor((1 - t) * K + 1e-9)), K - 1) if t > 0 else K - 1  # window holding t (t_e inclusive)
        t_s, t_e = 1 - j / K, 1 - (j + 1) / K
        expect = ends[j] + (t - t_s) / (t_e - t_s) * (ends[j + 1] - ends[j])
        torch.testing.assert_close(z.double(), expect, atol=2e-5, rtol=1e-5)
    for j in range(1, K + 1):  # lands on every window end
        torch.testing.assert_close(seen[1 - j / K].double(), ends[j], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out.double(), ends[K], atol=2e-5, rtol=1e-5)


def test_scheduler_step_equals_pure_sampler(sched, gen):
    s = PeRFlowScheduler()
    s.set_timesteps(6)
    assert s.timesteps.tolist() == [1000.0, 875.0, 750.0, 625.0, 500.0, 250.0]
    assert s.init_noise_sigma == 1.0 and s.timesteps.dtype == torch.float32
    toy = lambda z, t: 0.3 * torch.tanh(z) + (t / 1000).reshape(-1, 1, 1, 1)
    z = torch.randn(2, 3, 4, 4, generator=gen)
    x = z.clone()
    for t in s.timesteps:
        x_in = s.scale_model_input(x, t)
        assert x_in is x
        x = s.step(toy(x_in, t.expand(2)), t, x).prev_sample
    assert torch.equal(x, sample_perflow(toy, z, 6, sched))
    (tup,) = s.step(toy(z, torch.full((2,), 1000.0)), s.timesteps[0], z, return_dict=False)
    with pytest.raises(ValueError):
        s.step(z, 333.0, z)
    assert torch.equal(tup, perflow_step(z, toy(z, torch.full((2,), 1000.0)), 1.0, 0.875, 4, sched))

    late = PeRFlowScheduler(extra_steps="late")
    late.set_timesteps(6)
    assert late.timesteps.tolist() == [1000.0, 750.0, 500.0, 375.0, 250.0, 125.0]
    x = z.clone()
    for t in late.timesteps:
        x = late.step(toy(x, t.expand(2)), t, x).prev_sample
    assert torch.equal(x, sample_perflow(toy, z, 6, sched, extra="late"))


def test_scheduler_add_noise_and_round_trip(tmp_path, ac, gen):
    s = PeRFlowScheduler(num_windows=4)
    x0, eps = torch.randn(3, 2, 2, generator=gen), torch.randn(3, 2, 2, generator=gen)
    ts = torch.tensor([1000.0, 750.0, 1.0])
    torch.testing.assert_close(s.add_noise(x0, eps, ts), add_noise(x0, eps, ac[[999, 749, 0]]))
    s.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").exists()
    r = PeRFlowScheduler.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}
    assert public(r.config) == public(s.config) and r.config.num_windows == 4
    r.set_timesteps(7)
    s.set_timesteps(7)
    assert torch.equal(r.timesteps, s.timesteps) and torch.equal(r.alphas_cumprod, ac)
    other = PeRFlowScheduler(num_windows=2, extra_steps="late")
    other.save_pretrained(tmp_path / "k2")
    back = PeRFlowScheduler.from_pretrained(tmp_path / "k2")
    assert back.config.num_windows == 2 and back.config.extra_steps == "late"


def test_implied_endpoint_inverts_the_window_target():
    """A student predicting ε̂ exactly at any point of the window line implies the window end ẑ_e."""
    from fada.diffusion import NoiseSchedule, implied_endpoint, perflow_target, perflow_window

    ac = NoiseSchedule()
    g = torch.Generator().manual_seed(3)
    x0, eps, z_e = (torch.randn(5, 2, 3, generator=g) for _ in range(3))
    t = torch.tensor([0.99, 0.8, 0.6, 0.3, 0.1])
    w = perflow_window(x0, eps, t, 4, ac)
    z_t, eps_hat = perflow_target(w, z_e)
    torch.testing.assert_close(implied_endpoint(z_t, eps_hat, t, 4, ac), z_e, rtol=1e-4, atol=1e-4)


def test_velocity_weight_turns_eps_error_into_velocity_error():
    """Independent check: v = (ẑ_e − z_t)/(t_e − t) computed from two ε predictions at the same z_t."""
    from fada.diffusion import NoiseSchedule, implied_endpoint, velocity_weight, window_of

    ac = NoiseSchedule()
    g = torch.Generator().manual_seed(4)
    z, e1, e2 = (torch.randn(3, 6, generator=g) for _ in range(3))
    t = torch.tensor([0.9, 0.5, 0.2])
    K = 1
    _, t_e = window_of(t, K)
    v1 = (implied_endpoint(z, e1, t, K, ac) - z) / (t_e - t).float()[:, None]
    v2 = (implied_endpoint(z, e2, t, K, ac) - z) / (t_e - t).float()[:, None]
    lhs = (v1 - v2).pow(2).sum(1)
    rhs = velocity_weight(t, K, ac).float() * (e1 - e2).pow(2).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-5)



@pytest.mark.parametrize("K", [1, 4])
def test_window_line_remap_lands_on_the_noising_path(K, sched, ac_np):
    """Independent check in float64 numpy: a window-line point of one x0 (a DDIM path keeps its ε, Eq. 3 between
    the path points at t_s and t_e), scaled by the map, is the noising-path point √ᾱ'·x0 + √(1−ᾱ')·ε at the
    returned fractional index (ᾱ' linear between grid points), and ε is the window target of Eq. 4."""
    from fada.diffusion import window_line_remap

    rng = np.random.default_rng(5)
    ab = lambda t: ac_np[max(round(1000 * t) - 1, 0)]
    for t in (1.0, 0.9, 0.62, 0.5, 0.3, 0.05):
        k = max(1, int(np.ceil((t - 1e-4) * K)))
        t_s, t_e = k / K, (k - 1) / K
        x0, eps = rng.normal(size=64), rng.normal(size=64)
        z_s = np.sqrt(ab(t_s)) * x0 + np.sqrt(1 - ab(t_s)) * eps
        z_e = np.sqrt(ab(t_e)) * x0 + np.sqrt(1 - ab(t_e)) * eps
        z_t = z_s + (t - t_s) / (t_e - t_s) * (z_e - z_s)
        lam, eta = np_coefficients(ac_np, t_s, t_e)
        np.testing.assert_allclose((z_e - lam * z_s) / eta, eps, atol=1e-9)   # the window target is this ε
        scale, tau = (float(x) for x in window_line_remap(torch.tensor([1000.0 * t]), K, sched))
        lo = int(np.floor(tau))
        ab_tau = ac_np[lo] + (tau - lo) * (ac_np[min(lo + 1, 999)] - ac_np[lo])
        np.testing.assert_allclose(scale * z_t, np.sqrt(ab_tau) * x0 + np.sqrt(1 - ab_tau) * eps, atol=2e-4)
        if abs(t - t_s) < 1e-9:   # a window's start is already on the path
            assert scale == pytest.approx(1.0, abs=1e-6) and tau == pytest.approx(1000 * t_s - 1, abs=1e-3)


def test_fractional_timesteps_read_the_schedule_linearly(ac, sched):
    from fada.diffusion import precond_output_scale

    k = lambda tau: float(precond_output_scale(torch.tensor([tau]), 0.25, sched))
    ab = lambda i: float(ac[i])
    mid = 0.5 * (ab(500) + ab(501))
    assert k(500.5) == pytest.approx((mid * 0.25 / (mid * 0.25 + 1 - mid)) ** 0.5, rel=1e-6)
    assert k(500.0) == pytest.approx((ab(500) * 0.25 / (ab(500) * 0.25 + 1 - ab(500))) ** 0.5, rel=1e-6)
    assert k(999.0) == pytest.approx((ab(999) * 0.25 / (ab(999) * 0.25 + 1 - ab(999))) ** 0.5, rel=1e-6)


def _hallo():
    from fada.diffusion import NoiseSchedule

    return NoiseSchedule(beta_schedule="linear", prediction_type="v_prediction", timestep_spacing="trailing",
                         set_alpha_to_one=True, rescale_betas_zero_snr=True)


def test_v_window_target_of_an_exact_teacher_is_its_own_output():
    """For a v teacher that knows x0 and ε, the DDIM solve lands on the true window end, and the window target read
    back is v at the window start: √ᾱ_s·ε − √(1−ᾱ_s)·x0, finite in the first window where ᾱ_s = 0."""
    from fada.diffusion import ddim_solve

    sched = _hallo()
    g = torch.Generator().manual_seed(6)
    x0, eps = torch.randn(4, 2, 5, generator=g), torch.randn(4, 2, 5, generator=g)
    w = perflow_window(x0, eps, torch.tensor([1.0, 0.8, 0.4, 0.1]), 4, sched)
    assert float(w.ab_s[0]) == 0.0 and float(w.ab_e[3]) == 1.0  # zero terminal SNR; the clean end is ᾱ = 1

    def exact(z, t):  # the true v of (x0, ε) at each sample's current ᾱ
        return sched.output(x0, eps, sched.ab(t.long()))

    z_e = ddim_solve(exact, w.z_s, w.index_s, w.index_e, 8, sched)
    ab_e = w.ab_e.view(-1, 1, 1)
    torch.testing.assert_close(z_e, ab_e.sqrt() * x0 + (1 - ab_e).sqrt() * eps, rtol=1e-4, atol=1e-4)
    _, target = perflow_target(w, z_e)
    ab_s = w.ab_s.view(-1, 1, 1)
    torch.testing.assert_close(target, ab_s.sqrt() * eps - (1 - ab_s).sqrt() * x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [4, 6])
def test_v_exact_student_follows_piecewise_linear_path(n, gen):
    """The sampler with a v student that outputs each window's exact target moves along the straight lines through
    independently chosen window ends, from ᾱ = 0 at t = 1."""
    sched, K = _hallo(), 4
    ends = [torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) for _ in range(K + 1)]

    def student(z, timestep):
        t = float(timestep[0]) / 1000
        t_s, t_e = (float(x) for x in window_of(torch.tensor([t], dtype=torch.float64), K))
        j = round((1 - t_s) * K)
        lam, eta = window_coefficients(sched.alpha_bar(t_s).double(), sched.alpha_bar(t_e).double(), sched)
        return window_target(ends[j + 1], ends[j], lam, eta).float()

    seen = {}
    out = sample_perflow(student, ends[0].float(), n, sched, K, callback=lambda i, t, z: seen.__setitem__(float(t), z))
    for j in range(1, K + 1):
        torch.testing.assert_close(seen[1 - j / K].double(), ends[j], atol=2e-5, rtol=1e-5)
    assert torch.isfinite(out).all()


def test_scheduler_config_carries_the_whole_schedule(tmp_path):
    sched = _hallo()
    s = PeRFlowScheduler.for_schedule(sched, 4, "late")
    s.save_pretrained(tmp_path)
    back = PeRFlowScheduler.from_pretrained(tmp_path)
    assert back.schedule == sched and back.config.extra_steps == "late"
    from fada.diffusion import NoiseSchedule

    assert NoiseSchedule.from_config(dict(back.config)) == sched
