"""IQA (weight-free, registry) and NFE-D / wall-time bookkeeping."""

import cv2
import numpy as np
import pytest

from fada.errors import FadaError
from fada.metrics.iqa import DEFAULT_IQA, get_iqa, iqa_names, iqa_score, register_iqa
from fada.metrics.nfe import Timer, nfe_per_clip, nfe_speedup, throughput


def _texture(seed=0, size=128):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_sharpness_orders_blur_and_ignores_resolution():
    img = _texture()
    blurred = cv2.GaussianBlur(img, (0, 0), 3)
    assert DEFAULT_IQA == "iqa_sharpness"
    assert iqa_score(img) > iqa_score(blurred) + 0.5
    assert iqa_score(np.zeros((64, 64, 3), np.uint8)) == 0.0
    smooth = cv2.GaussianBlur(_texture(1, 64), (0, 0), 4)  # band-limited: resizing keeps its look
    big = cv2.resize(smooth, (256, 256), interpolation=cv2.INTER_CUBIC)
    assert iqa_score(big) == pytest.approx(iqa_score(smooth), abs=0.3)


def test_colorfulness_known_values():
    grey = np.full((2, 8, 8, 3), 100, np.uint8)
    assert iqa_score(grey, "iqa_colorfulness") == 0.0
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    # rg = 255, yb = 127.5, no spread: 0.3 * sqrt(255² + 127.5²)
    assert iqa_score(red, "iqa_colorfulness") == pytest.approx(0.3 * np.hypot(255, 127.5))


def test_registry(monkeypatch):
    import fada.metrics.iqa as iqa

    monkeypatch.setattr(iqa, "_REGISTRY", dict(iqa._REGISTRY))  # registering here must not leak into other tests
    assert {"iqa_sharpness", "iqa_colorfulness"} <= set(iqa_names())
    register_iqa("test_mean_brightness", lambda v: float(v.mean()), overwrite=True)
    assert get_iqa("test_mean_brightness")(np.full((1, 2, 2, 3), 7, np.uint8)) == 7.0
    with pytest.raises(FadaError, match="already registered"):
        register_iqa("iqa_sharpness", lambda v: 0.0)
    with pytest.raises(FadaError, match="unknown IQA"):
        iqa_score(_texture(), "q_align")


def test_nfe_paper_numbers():
    assert nfe_per_clip("teacher", 25) == 75
    assert nfe_per_clip("balanced", 6) == 18
    assert nfe_per_clip("fast", 6) == 6
    assert nfe_speedup(75, 18) == pytest.approx(4.17, abs=0.005)
    assert nfe_speedup(75, 6) == 12.5
    with pytest.raises(FadaError):
        nfe_per_clip("turbo", 4)
    with pytest.raises(FadaError):
        nfe_per_clip("fast", 0)


def test_timer_and_throughput():
    ticks = iter([10.0, 16.0])
    with Timer(clock=lambda: next(ticks)) as t:
        pass
    assert t.seconds == 6.0
    assert t.per_video_second(2.0) == 3.0
    assert throughput(1.0, 4.0) == 0.25
    with pytest.raises(FadaError):
        throughput(1.0, 0.0)
