import pytest
import torch

from fada.diffusion import (
    ddim_solve,
    ground_truth_endpoint,
    mixed_loss,
    mixed_weight,
    per_sample_mse,
    perflow_target,
    perflow_window,
)

R = torch.tensor([1.0, 16.0, 30.0, 65.0, 100.0, 250.0])
# hand numbers: 30^.25 = 2.3403473193, 65^.25 = 2.8394115, 100^.25 = 3.1622777, 250^.25 = 3.9763536
EXPECTED = {
    "off": [0.0] * 6,
    "fixed": [0.2] * 6,
    "adaptive_unlimited": [0.2, 0.4, 0.46806946, 0.56788230, 0.63245553, 0.79527073],
    "adaptive": [0.2, 0.4, 0.46806946, 0.46806946 * 35 / 70, 0.0, 0.0],
}


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_weight_hand_numbers(mode):
    w = mixed_weight(R, mode)
    assert w.tolist() == pytest.approx(EXPECTED[mode], rel=1e-6, abs=1e-9)


def test_weight_options_and_continuity():
    assert mixed_weight(R, "fixed", fixed=0.5).tolist() == [0.5] * 6
    eps = torch.tensor([30 - 1e-4, 30.0, 100 - 1e-4])
    w = mixed_weight(eps.double(), "adaptive")
    assert w[0].item() == pytest.approx(w[1].item(), rel=1e-5) and w[2].item() == pytest.approx(0.0, abs=1e-5)
    assert mixed_weight(torch.tensor([50.0]), "adaptive", r_peak=40, r_dead=60).item() == pytest.approx(
        0.2 * 40**0.25 * 0.5)
    with pytest.raises(ValueError):
        mixed_weight(R, "sometimes")


def test_loss_eq7_and_ratio_detached():
    l_d = torch.tensor([1.0, 2.0, 0.5, 1.0], requires_grad=True)
    l_g = torch.tensor([16.0, 60.0, 75.0, 300.0], requires_grad=True)  # R = 16, 30, 150, 300
    total, stats = mixed_loss(l_d, l_g, "adaptive")
    w = torch.tensor([0.4, 0.46806946, 0.0, 0.0])
    assert total.item() == pytest.approx(((l_d + w * l_g).sum() / 4).item(), rel=1e-6)
    total.backward()
    # no gradient through R: ∂/∂L_distill = 1/B exactly and ∂/∂L_GT = W/B
    assert l_d.grad.tolist() == [0.25] * 4
    assert l_g.grad.tolist() == pytest.approx((w / 4).tolist(), rel=1e-6)
    assert stats["ratio"].tolist() == pytest.approx([16, 30, 150, 300]) and not stats["ratio"].requires_grad
    assert stats["w_zero_frac"].item() == 0.5 and stats["w_mean"].item() == pytest.approx(w.mean().item())


def test_loss_guards_zero_distill_loss():
    total, stats = mixed_loss(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), "adaptive")
    assert torch.isfinite(total) and torch.isfinite(stats["ratio"]).all()
    assert total.item() == pytest.approx((0 + 0 + 1 + 0.2) / 2)  # R huge → W 0; R = 1 → W 0.2
    off, _ = mixed_loss(torch.tensor([1.0, 3.0]), torch.tensor([5.0, 5.0]), "off")
    assert off.item() == 2.0


def test_per_sample_mse():
    a, b = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    b[1] *= 2
    assert per_sample_mse(a, b).tolist() == [1.0, 4.0]


def test_gt_endpoint_equals_exact_teacher_target(sched, gen):
    """Linear-Gaussian check: a teacher whose ε is the true ε lands on z_e, so ẑ_e = z_e and ε̂ = ε* = ε."""
    x0, eps = torch.randn(4, 3, 6, 6, generator=gen), torch.randn(4, 3, 6, 6, generator=gen)
    w = perflow_window(x0, eps, torch.tensor([1.0, 0.6, 0.42, 0.1]), 4, sched)
    z_hat_e = ddim_solve(lambda z, t: eps, w.z_s, w.index_s, w.index_e, 8, sched)
    z_e = ground_truth_endpoint(x0, eps, w.ab_e)
    torch.testing.assert_close(z_e, w.ab_e.sqrt()[:, None, None, None] * x0
                               + (1 - w.ab_e).sqrt()[:, None, None, None] * eps)
    torch.testing.assert_close(z_hat_e, z_e, atol=1e-5, rtol=1e-5)
    (z_t, eps_hat), (z_t_gt, eps_gt) = perflow_target(w, z_hat_e), perflow_target(w, z_e)
    torch.testing.assert_close(z_t, z_t_gt, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_hat, eps_gt, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_gt, eps, atol=1e-4, rtol=1e-4)  # (z_e − λ z_s)/η = ε on the true marginal
