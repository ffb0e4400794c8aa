"""NoiseSchedule: ᾱ, the DDIM grid and steps against diffusers' DDIMScheduler with the same settings, the ε / v
conversions against hand computations, and the config round trips."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from fada.diffusion import NoiseSchedule, sample_ddim

# Hallo's teacher: configs/inference/default.yaml's noise_scheduler_kwargs plus zero SNR (DDIMScheduler defaults
# for the rest: set_alpha_to_one True)
HALLO = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
             clip_sample=False, set_alpha_to_one=True, steps_offset=1, prediction_type="v_prediction",
             timestep_spacing="trailing", rescale_betas_zero_snr=True)
SD15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
            timestep_spacing="leading", rescale_betas_zero_snr=False)
VARIANTS = [SD15, HALLO, {**SD15, "prediction_type": "v_prediction"}, {**SD15, "timestep_spacing": "trailing"}]


def schedule_of(cfg: dict) -> NoiseSchedule:
    return NoiseSchedule.from_config(cfg)


def toy_out(z, t):
    return 0.3 * torch.tanh(z) + (t.float() / 1000).reshape(-1, *[1] * (z.dim() - 1)) * 0.2 - 0.1


@pytest.mark.parametrize("cfg", VARIANTS, ids=["sd15", "hallo", "sd15-v", "sd15-trailing"])
@pytest.mark.parametrize("n", [1, 3, 7, 25, 40])
def test_ddim_equals_diffusers_step_by_step(cfg, n):
    ref_sched = DDIMScheduler(**cfg)
    ref_sched.set_timesteps(n)
    sched = schedule_of(cfg)
    assert torch.equal(sched.alphas_cumprod, ref_sched.alphas_cumprod)
    assert torch.equal(sched.ddim_timesteps(n)[0], ref_sched.timesteps)
    z0 = torch.randn(2, 4, 3, 6, 6, generator=torch.Generator().manual_seed(n))
    ref, steps = z0.clone(), []
    for t in ref_sched.timesteps:
        ref = ref_sched.step(toy_out(ref, t.expand(2)), t, ref).prev_sample
        steps.append(ref.clone())
    seen = []
    out = sample_ddim(toy_out, z0, n, sched, callback=lambda i, t, z: seen.append(z.clone()))
    for a, b in zip(seen, steps):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_zero_snr_schedule_ends_at_zero_and_starts_trailing():
    h = schedule_of(HALLO)
    assert float(h.alphas_cumprod[-1]) == 0.0 and h.zero_terminal_snr and h.final_alpha_cumprod == 1.0
    ts, ends = h.ddim_timesteps(3)
    assert ts.tolist() == [999, 666, 332] and ends.tolist() == [666, 333, -1]  # diffusers' t − T//n
    assert float(h.alpha_bar(1.0)) == 0.0 and float(h.alpha_bar(0.0)) == 1.0
    with pytest.raises(ValueError, match="v_prediction"):
        NoiseSchedule(rescale_betas_zero_snr=True)  # an ε net gives no x̂0 where ᾱ = 0


def test_conversions_against_hand_computation():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    ab = torch.tensor([0.0, 0.02, 0.5, 0.999], dtype=torch.float64)
    a, s = ab.sqrt()[:, None], (1 - ab).sqrt()[:, None]
    z = a * x0 + s * eps
    v = a * eps - s * x0  # v-prediction's target (Salimans & Ho 2022)
    vs = NoiseSchedule(prediction_type="v_prediction")
    torch.testing.assert_close(vs.output(x0.float(), eps.float(), ab.float()).double(), v, rtol=1e-5, atol=1e-6)
    x0_hat, eps_hat = vs.x0_eps(z.float(), v.float(), ab.float())
    torch.testing.assert_close(x0_hat.double(), x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_hat.double(), eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vs.output_from_x0(z[1:].float(), x0[1:].float(), ab[1:].float()).double(), v[1:],
                               rtol=1e-4, atol=1e-4)
    es = NoiseSchedule()
    x0_e, eps_e = es.x0_eps(z[1:].float(), eps[1:].float(), ab[1:].float())
    torch.testing.assert_close(x0_e.double(), x0[1:], rtol=1e-4, atol=1e-4)
    assert es.output(x0, eps, ab) is eps


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_jump_coefficients_are_the_ddim_step(kind):
    """A·z + B·o equals the DDIM step for any output, including from ᾱ = 0 for v (the first step of a zero-SNR
    teacher), and reproduces PeRFlow's λ, η for ε."""
    cfg = HALLO if kind == "v_prediction" else SD15
    sched = schedule_of(cfg)
    g = torch.Generator().manual_seed(1)
    z, o = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    ab_from = torch.tensor([float(sched.alphas_cumprod[-1]), 0.3, 0.7])
    ab_to = torch.tensor([0.2, 0.6, 0.99])
    A, B = sched.jump_coefficients(ab_from, ab_to)
    torch.testing.assert_close((A[:, None] * z + B[:, None] * o).float(), sched.ddim_step(z, o, ab_from, ab_to),
                               rtol=1e-5, atol=1e-5)
    if kind == "epsilon":
        lam = (ab_to / ab_from).sqrt()
        torch.testing.assert_close(A.float(), lam)
        torch.testing.assert_close(B.float(), (1 - ab_to).sqrt() - (1 - ab_from).sqrt() * lam)


def test_config_round_trips_and_refusals(tmp_path):
    h = schedule_of(HALLO)
    assert NoiseSchedule.from_config(h.to_dict()) == h == NoiseSchedule.from_config(h.diffusers_config())
    DDIMScheduler(**h.diffusers_config()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert NoiseSchedule.from_config(saved) == h
    # a key left out reads as SD1.5 (fada folders from before it existed); other schedulers' keys pass
    assert NoiseSchedule.from_config({"num_windows": 4, "extra_steps": "late"}) == NoiseSchedule()
    with pytest.raises(ValueError) as e:
        NoiseSchedule.from_config({"clip_sample": True, "thresholding": True, "steps_offset": "one"})
    assert "clip_sample" in str(e.value) and "thresholding" in str(e.value) and "steps_offset" in str(e.value)
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule.from_config({"prediction_type": "sample"})
    with pytest.raises(ValueError, match="timestep_spacing"):
        NoiseSchedule.from_config({"timestep_spacing": "linspace"})


def test_fractional_timesteps_read_linearly_and_clamp():
    h = schedule_of(HALLO)
    ac = h.alphas_cumprod.double()
    got = h.ab_at_timesteps(torch.tensor([998.5, 999.0, 1200.0, -3.0]))
    want = torch.tensor([0.5 * (ac[998] + ac[999]), ac[999], ac[999], ac[0]])
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(h.ab(torch.tensor([-1, 0, 999])).numpy(),
                                  np.array([1.0, float(ac[0]), 0.0], dtype=np.float32))
