"""The video noise prior (fada.diffusion.noise): the PYoCo mixed model against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fada.diffusion.noise import mix_noise, shared_shape, video_noise


def test_share_zero_is_plain_randn():
    a = video_noise((2, 3, 4, 5, 5), torch.Generator().manual_seed(3), 0.0)
    b = torch.randn((2, 3, 4, 5, 5), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("share", [0.25, 0.9])
def test_marginals_are_standard_and_frames_correlate_by_share(share):
    n = video_noise((4000, 1, 3, 2, 2), torch.Generator().manual_seed(0), share).numpy()
    assert abs(n.mean()) < 0.02 and abs(n.std() - 1.0) < 0.02  # every frame is still N(0, I)
    f = n.transpose(2, 0, 1, 3, 4).reshape(3, -1)  # frames x samples
    c = np.corrcoef(f)
    off = c[~np.eye(3, dtype=bool)]
    assert np.allclose(off, share, atol=0.03)  # corr(ε_f, ε_g) = ρ for f ≠ g
    assert abs(np.corrcoef(n[:, 0, 0, 0, 0], n[:, 0, 0, 0, 1])[0, 1]) < 0.05  # positions stay independent


def test_mix_formula_and_shared_reuse():
    g = torch.Generator().manual_seed(1)
    shared, ind = torch.randn(1, 2, 1, 3, 3, generator=g), torch.randn(1, 2, 4, 3, 3, generator=g)
    want = np.sqrt(0.3) * shared.numpy() + np.sqrt(0.7) * ind.numpy()  # broadcast over frames
    assert np.allclose(mix_noise(ind, shared, 0.3).numpy(), want, atol=1e-6)
    # the same draws through video_noise: shared first, then the independent part
    got = video_noise((1, 2, 4, 3, 3), torch.Generator().manual_seed(1), 0.3)
    assert torch.allclose(got, torch.from_numpy(want).float(), atol=1e-6)
    # share 1: every frame (and every clip reusing the video's shared part) starts from the same noise
    one = video_noise((1, 2, 4, 3, 3), torch.Generator().manual_seed(9), 1.0, shared=shared)
    assert torch.equal(one, shared.expand(1, 2, 4, 3, 3))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(B, C, F, h, w\)"):
        shared_shape((2, 3, 4))
    with pytest.raises(ValueError, match="noise share must be in"):
        mix_noise(torch.zeros(1), torch.zeros(1), 1.5)


def test_clip_noises_draw_the_shared_part_once_per_video():
    from fada.diffusion import clip_noises

    shape = (1, 2, 3, 4, 4)
    gen = torch.Generator().manual_seed(5)
    shared = torch.randn(shared_shape(shape), generator=gen)
    expect = [video_noise(shape, gen, 0.5, shared=shared) for _ in range(3)]
    got = clip_noises(shape, 5, 0.5)
    for e in expect:
        assert torch.equal(next(got), e)
    independent = clip_noises(shape, 5, 0.0)  # ρ = 0: the plain seeded torch.randn sequence
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(next(independent), torch.randn(shape, generator=gen))
    assert torch.equal(next(independent), torch.randn(shape, generator=gen))
