"""Mouth / elsewhere scores (fada.evaluation.regions) against sums written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fada.errors import FadaError
from fada.evaluation.regions import (MAX_PSNR, box_mask, mouth_change, mouth_correlation, psnr, region_psnr,
                                     region_scores, roughness)

BOX = (0.2, 0.3, 0.6, 0.8)  # on 10x10 frames: columns 2-5, rows 3-7


def test_box_mask_rounds_to_pixels():
    m = box_mask(10, 10, BOX)
    assert m.sum() == 4 * 5 and m[3:8, 2:6].all()
    with pytest.raises(FadaError, match="fractions"):
        box_mask(10, 10, (0.5, 0.1, 0.4, 0.9))


def test_region_psnr_inside_and_outside():
    truth = np.full((3, 10, 10, 3), 100, np.uint8)
    video = truth.copy()
    video[:, 3:8, 2:6] += 10          # error 10 inside the box only
    video[1, 0, 0] = 103              # one pixel of error 3 outside it
    got = region_psnr(truth, video, BOX)
    assert got["mouth"] == pytest.approx(20 * np.log10(255 / 10))
    outside = 100 - 20                # pixels per frame outside the box
    mse = 3 * 3 ** 2 / (3 * outside * 3)  # three channels off by 3, over 3 frames x 80 pixels x 3 channels
    assert got["elsewhere"] == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert region_psnr(truth, truth, BOX) == {"mouth": MAX_PSNR, "elsewhere": MAX_PSNR}


def test_psnr_is_skimages_over_the_clip_and_finite_for_a_copy():
    import warnings

    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (4, 12, 10, 3), dtype=np.uint8)
    video = np.clip(truth.astype(int) + rng.integers(-20, 21, truth.shape), 0, 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skimage warns (divide by zero) and returns inf for an exact copy
        assert psnr(truth, video) == pytest.approx(peak_signal_noise_ratio(truth, video, data_range=255), abs=1e-12)
        assert psnr(truth, truth) == MAX_PSNR


def test_mouth_correlation_follows_the_truths_mouth():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (10, 10, 3)).astype(np.uint8)
    opening = np.array([0, 3, 8, 2, 0, 6, 9, 1, 4, 0], float)
    truth = np.repeat(base[None], 10, axis=0)
    truth[:, 3:8, 2:6] = np.clip(base[3:8, 2:6][None] + opening[:, None, None, None], 0, 255)
    assert np.allclose(mouth_change(truth, BOX), opening)  # all channels moved by `opening`
    wide = truth.copy()
    wide[:, 3:8, 2:6] = np.clip(base[3:8, 2:6][None] + 2 * opening[:, None, None, None], 0, 255)
    assert mouth_correlation(truth, wide, BOX) == pytest.approx(1.0)  # proportional, wider: still 1
    late = truth[np.r_[0, 0, 1:9]]  # one frame behind
    assert mouth_correlation(truth, late, BOX) == pytest.approx(np.corrcoef(opening, opening[np.r_[0, 0, 1:9]])[0, 1])
    still = np.repeat(truth[:1], 10, axis=0)
    assert mouth_correlation(truth, still, BOX) == 0.0


def test_region_scores_noise_ratio():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 256, (4, 10, 10, 3), dtype=np.uint8)
    flat = np.full_like(truth, 128)
    s = region_scores(truth, truth, BOX)
    assert s["noise_ratio"] == 1.0 and s["psnr_mouth"] == MAX_PSNR and s["mouth_corr"] == pytest.approx(1.0)
    assert region_scores(truth, flat, BOX)["noise_ratio"] == 0.0
    want = np.abs(np.diff(truth.astype(float), axis=2)).mean()
    assert roughness(truth) == pytest.approx(want)
    with pytest.raises(FadaError, match="one size"):
        region_scores(truth, truth[:, :5], BOX)
