"""Weight-free audio-visual synchrony: offset search, envelope, mouth motion, end to end with a known shift."""

import numpy as np
import pytest

from fada.errors import FadaError
from fada.metrics.av_sync import (WeightFreeSync, audio_envelope, envelope_flux, mouth_motion, offset_search,
                                  resolve_box)


@pytest.mark.parametrize("k", [0, 3, -5, 15])
def test_offset_search_recovers_known_shift(k):
    rng = np.random.default_rng(0)
    base = rng.standard_normal(300)
    a = base[100:200]
    b = base[100 - k:200 - k]  # b[t] = a[t - k]: b lags a by k
    offset, conf, curve = offset_search(a, b, max_offset=15)
    assert offset == k
    assert curve.shape == (31,) and curve[k + 15] == pytest.approx(1.0)
    assert conf > 0.8


def test_offset_search_noise_has_low_confidence():
    rng = np.random.default_rng(1)
    _, conf, _ = offset_search(rng.standard_normal(200), rng.standard_normal(200), 15)
    assert conf < 0.4
    with pytest.raises(FadaError):
        offset_search([1.0, 2.0], [1.0, 2.0], 1)


def test_audio_envelope_known_values():
    sr, fps = 16000, 25
    t = np.arange(sr) / sr
    audio = 0.5 * np.sin(2 * np.pi * 200 * t)  # 200 Hz: whole periods per 40 ms frame
    audio[sr // 2:] = 0.0
    env = audio_envelope(audio, sr, fps, 30)  # 30 frames > 25 available: the tail is silent
    np.testing.assert_allclose(env[:12], 0.5 / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(env[13:], 0.0, atol=1e-12)
    np.testing.assert_allclose(envelope_flux([1.0, 3.0, 2.0]), [0.0, 2.0, 1.0])


def test_mouth_motion_only_sees_the_mouth_box():
    rng = np.random.default_rng(2)
    frames = np.full((6, 64, 64, 3), 128, np.uint8)
    frames[:, :20] = rng.integers(0, 256, (6, 20, 64, 3), dtype=np.uint8)  # motion in the forehead only
    np.testing.assert_allclose(mouth_motion(frames), 0.0)
    frames[3, 45:55, 25:40] = 0  # mouth region changes at t = 3 and back at t = 4
    m = mouth_motion(frames)
    assert m[0] == 0 and m[1] == 0 and m[3] > 0 and m[4] > 0 and m[5] == 0
    assert resolve_box((0.25, 0.6, 0.75, 0.92), 64, 64) == (16, 38, 48, 59)
    assert resolve_box((10, 20, 30, 40), 64, 64) == (10, 20, 30, 40)


def _talking_clip(k, n=120, fps=25, sr=16000, seed=3):
    """Mouth opening follows a smooth loudness curve; the audio follows the same curve delayed by k frames."""
    rng = np.random.default_rng(seed)
    raw = np.convolve(rng.random(n + 40), np.ones(5) / 5, mode="same")
    open_v = raw[20:20 + n]
    loud = raw[20 - k:20 - k + n]
    frames = np.full((n, 96, 96, 3), 180, np.uint8)
    for t in range(n):
        h = int(round(2 + 20 * open_v[t]))
        frames[t, 72 - h // 2:72 + (h + 1) // 2, 30:66] = 20
    spf = sr // fps
    audio = rng.standard_normal(n * spf) * np.repeat(loud, spf)
    return frames, audio


@pytest.mark.parametrize("k", [0, 4, -3])
def test_weight_free_sync_recovers_av_offset(k):
    frames, audio = _talking_clip(k)
    res = WeightFreeSync(max_offset=15).score(frames, audio, 16000, fps=25)
    assert res["av_offset"] == k
    assert res["av_corr_conf"] > 0.3 and res["av_corr"] > 0.5


def test_offset_search_on_signals_shorter_than_the_search_range():
    import warnings

    from fada.metrics.av_sync import offset_search

    a = np.sin(np.arange(8.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        offset, conf, curve = offset_search(a, a, max_offset=15)
    assert offset == 0 and curve[15] == pytest.approx(1.0)
    assert (curve[:11] == 0).all()  # shifts of 5 or more leave fewer than 4 overlapping samples
