import torch

from fada.diffusion import (
    DISTILLED_GUIDANCE,
    NO_GUIDANCE,
    TEACHER_GUIDANCE,
    Guidance,
    conditional,
    conditional_eps,
    guided,
    guided_eps,
    multi_cfg,
)


class ToyModel:
    """model_fn contract; output depends on z, t and both masks, and calls are recorded."""

    def __init__(self):
        self.calls = []

    def __call__(self, z, t, keep_audio, keep_ref):
        self.calls.append((z.shape[0], t.clone(), keep_audio.clone(), keep_ref.clone()))
        b = (-1,) + (1,) * (z.dim() - 1)
        return 0.5 * z + 3.0 * keep_audio.float().reshape(b) + 1.0 * keep_ref.float().reshape(b) \
            + (t.float() / 1000).reshape(b)


def test_eq9_hand_made():
    a, r, b = torch.full((2, 3), 3.0), torch.full((2, 3), 2.0), torch.full((2, 3), 1.0)
    # 6.5·(3−2) + 2.5·(2−1) + 1 = 10
    assert torch.equal(multi_cfg(a, r, b, 6.5, 2.5), torch.full((2, 3), 10.0))
    # per-sample scales: sample 0: 1·1 + 0·1 + 1 = 2; sample 1: 2·1 + 3·1 + 1 = 6
    out = multi_cfg(a, r, b, torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0]))
    assert torch.equal(out, torch.tensor([[2.0] * 3, [6.0] * 3]))
    # limits: (1, 1) → ε_a, (0, 0) → ε_b, (0, 1) → ε_r
    assert torch.equal(multi_cfg(a, r, b, 1.0, 1.0), a)
    assert torch.equal(multi_cfg(a, r, b, 0.0, 0.0), b)
    assert torch.equal(multi_cfg(a, r, b, 0.0, 1.0), r)


def test_guided_eps_is_one_batch_equal_to_three_calls():
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([900.0, 100.0])
    m = ToyModel()
    out = guided_eps(m, z, t, 6.5, 2.5)
    assert len(m.calls) == 1 and m.calls[0][0] == 6
    _, tt, ka, kr = m.calls[0]
    assert tt.tolist() == [900, 100] * 3
    assert ka.tolist() == [True, True, False, False, False, False]
    assert kr.tolist() == [True, True, True, True, False, False]

    ref_model = ToyModel()
    on, off = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    e_a, e_r, e_b = ref_model(z, t, on, on), ref_model(z, t, off, on), ref_model(z, t, off, off)
    torch.testing.assert_close(out, 6.5 * (e_a - e_r) + 2.5 * (e_r - e_b) + e_b)


def test_guided_eps_masks_scalar_t_and_per_sample_scales():
    z = torch.zeros(2, 3)
    m = ToyModel()
    ka, kr = torch.tensor([True, False]), torch.tensor([True, True])
    out = guided_eps(m, z, 500, torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]), keep_audio=ka, keep_ref=kr)
    _, tt, a, r = m.calls[0]
    assert tt.tolist() == [500] * 6
    assert a.tolist() == [True, False, False, False, False, False] and r.tolist() == [True, True] * 2 + [False] * 2
    # sample 0 at (1, 1): ε_a = 0 + 3 + 1 + .5; sample 1 keeps no audio, so ε_a = ε_r = 1.5 whatever cfg_a
    assert torch.allclose(out, torch.tensor([[4.5] * 3, [1.5] * 3]))


def test_conditional_and_eps_fn_builders():
    z, t = torch.ones(3, 2), torch.tensor([1.0, 2.0, 3.0])
    m = ToyModel()
    out = conditional_eps(m, z, t)
    assert m.calls[-1][2].all() and m.calls[-1][3].all() and m.calls[-1][0] == 3
    torch.testing.assert_close(out, 0.5 + 4.0 + t[:, None] / 1000 * torch.ones(3, 2))
    torch.testing.assert_close(conditional(m)(z, t), out)
    torch.testing.assert_close(guided(m, TEACHER_GUIDANCE)(z, t), guided_eps(m, z, t, 6.5, 2.5))
    n = len(m.calls)
    torch.testing.assert_close(guided(m, NO_GUIDANCE)(z, t), out)  # Eq. 9 at (1, 1) = ε_a: a single pass
    assert len(m.calls) == n + 1 and m.calls[-1][0] == 3


def test_paper_defaults():
    assert (TEACHER_GUIDANCE.cfg_a, TEACHER_GUIDANCE.cfg_r) == (6.5, 2.5)
    assert (DISTILLED_GUIDANCE.cfg_a, DISTILLED_GUIDANCE.cfg_r) == (6.5, 2.0)
    assert Guidance() == TEACHER_GUIDANCE and NO_GUIDANCE.is_identity and not TEACHER_GUIDANCE.is_identity
    assert not Guidance(torch.ones(2), torch.ones(2)).is_identity


def test_branches_are_the_batches_guided_eps_runs():
    """``Guidance.branches`` (what a bank encoded per branch is built from) is, row block by row block, the keep
    masks ``guided_eps`` hands the model: three branches for two scales, two (uncond first) for one, one for 1/1."""
    z = torch.randn(1, 2, generator=torch.Generator().manual_seed(0))
    for g, n in ((Guidance(6.5, 2.5), 3), (Guidance(3.5, 3.5), 2), (Guidance(1.0, 1.0), 1),
                 (Guidance(torch.tensor([3.5]), torch.tensor([3.5])), 3)):  # per-sample scales: Eq. 9 as written
        m = ToyModel()
        guided(m, g)(z, torch.tensor([500.0]))
        _, _, ka, kr = m.calls[0]
        assert g.passes == n == len(ka)
        assert list(zip(ka.tolist(), kr.tolist())) == [tuple(b) for b in g.branches], g


def test_single_scale_is_eq9_with_equal_scales_in_two_passes():
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10.0, 500.0, 990.0])
    m = ToyModel()
    out = guided_eps(m, z, t, 3.5, 3.5)
    assert len(m.calls) == 1 and m.calls[0][0] == 6  # [uncond; cond], Hallo's CFG batch order
    on, off = torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)
    ref = ToyModel()
    e_a, e_r, e_b = ref(z, t, on, on), ref(z, t, off, on), ref(z, t, off, off)
    torch.testing.assert_close(out, multi_cfg(e_a, e_r, e_b, 3.5, 3.5))
    torch.testing.assert_close(out, e_b + 3.5 * (e_a - e_b))
