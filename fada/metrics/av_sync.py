"""Weight-free audio-visual synchrony: mouth-region motion vs the audio envelope (pure numpy + OpenCV).

Not SyncNet and not comparable with Sync-C/Sync-D; it is reported under its own names (``av_corr_conf``,
``av_offset``, ``av_corr``). Also used by data curation, so the pieces are plain functions:

* ``mouth_motion(frames, mouth_box)`` -> (T,): mean absolute grey-level change of the mouth region between frame
  t-1 and t (value 0 at t = 0), the region first normalised to zero mean / unit std per frame so global lighting
  changes do not count as motion.
* ``audio_envelope(audio, sr, fps, n_frames)`` -> (n_frames,): RMS of the audio samples that fall in video frame
  t's interval [t/fps, (t+1)/fps).
* ``envelope_flux(env)`` -> (T,): |env[t] - env[t-1]| (0 at t = 0), the audio counterpart of frame-to-frame mouth
  motion: mouths move most where loudness changes (syllable onsets and offsets).
* ``offset_search(a, b, max_offset)`` -> (offset, confidence, corr_curve): Pearson correlation of a[t] with
  b[t + s] over the overlap, for s = -max_offset..max_offset; offset = argmax; confidence = peak - median over
  shifts. ``offset > 0`` means b lags a by ``offset`` samples (frames).

``WeightFreeSync.score(frames, audio, sr, fps)`` correlates mouth motion (a) with the envelope flux (b) over +/-15
frames: ``av_offset > 0`` means the audio lags the video.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from fada.errors import FadaError

#: default mouth box of an aligned, face-centred crop, as fractions (x0, y0, x1, y1) of width/height
DEFAULT_MOUTH_BOX = (0.25, 0.60, 0.75, 0.92)


def resolve_box(box: Optional[Sequence[float]], height: int, width: int,
                default: Sequence[float] = DEFAULT_MOUTH_BOX) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in pixels. ``None`` -> ``default``; all-float values in [0, 1] are fractions of W/H."""
    b = default if box is None else box
    if len(b) != 4:
        raise FadaError(f"a box is (x0, y0, x1, y1), got {b!r}")
    if all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in b):
        b = (b[0] * width, b[1] * height, b[2] * width, b[3] * height)
    x0, y0, x1, y1 = (int(round(float(v))) for v in b)
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise FadaError(f"box {tuple(box) if box is not None else default} is empty in a {width}x{height} frame")
    return x0, y0, x1, y1


def _gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame.astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)


def mouth_motion(frames, mouth_box: Optional[Sequence[float]] = None) -> np.ndarray:
    """(T, H, W, 3) or (T, H, W) frames -> (T,) float64 mouth-region motion energy (0 at t = 0)."""
    v = np.asarray(frames)
    if v.ndim not in (3, 4) or v.shape[0] == 0:
        raise FadaError(f"expected frames (T, H, W[, 3]), got shape {v.shape}")
    x0, y0, x1, y1 = resolve_box(mouth_box, v.shape[1], v.shape[2])
    regions = []
    for f in v:
        r = _gray(f[y0:y1, x0:x1])
        r = (r - r.mean()) / (r.std() + 1.0)  # +1 grey level: flat regions stay ~0 instead of amplifying noise
        regions.append(r)
    r = np.stack(regions).astype(np.float64)
    out = np.zeros(v.shape[0])
    out[1:] = np.abs(np.diff(r, axis=0)).mean(axis=(1, 2))
    return out


def audio_envelope(audio, sr: int, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames,) RMS of the audio inside each video frame's interval (0 where the audio has ended)."""
    a = np.asarray(audio, dtype=np.float64)
    if a.ndim == 2:
        a = a.mean(axis=1) if a.shape[0] >= a.shape[1] else a.mean(axis=0)
    if a.ndim != 1:
        raise FadaError(f"audio must be 1-D, got shape {a.shape}")
    if sr <= 0 or fps <= 0:
        raise FadaError(f"sample rate and fps must be positive, got {sr}, {fps}")
    edges = np.round(np.arange(n_frames + 1) * (sr / float(fps))).astype(np.int64)
    sq = np.concatenate([[0.0], np.cumsum(a * a)])
    lo = np.minimum(edges[:-1], a.size)
    hi = np.minimum(edges[1:], a.size)
    count = hi - lo
    energy = np.where(count > 0, (sq[hi] - sq[lo]) / np.maximum(count, 1), 0.0)
    return np.sqrt(np.maximum(energy, 0.0))


def envelope_flux(env) -> np.ndarray:
    """|env[t] - env[t-1]| with 0 at t = 0 (same length)."""
    e = np.asarray(env, dtype=np.float64)
    out = np.zeros_like(e)
    out[1:] = np.abs(np.diff(e))
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 1e-12 else 0.0


def offset_search(a, b, max_offset: int = 15, min_overlap: int = 4) -> tuple[int, float, np.ndarray]:
    """Correlation of a[t] with b[t + s] for s in [-max_offset, max_offset].

    Returns (offset, confidence, corr_curve): ``corr_curve[s + max_offset]`` is the Pearson correlation at shift s
    (0 where the overlap is shorter than ``min_overlap``), offset the best shift (ties: smallest |s|), confidence
    the peak minus the median of the curve. ``b = a`` delayed by k samples gives offset k.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    n = min(a.size, b.size)
    if n < min_overlap:
        raise FadaError(f"offset search needs at least {min_overlap} samples, got {n}")
    a, b = a[:n], b[:n]
    shifts = np.arange(-max_offset, max_offset + 1)
    curve = np.zeros(shifts.size)
    for i, s in enumerate(shifts):
        if abs(s) > n - min_overlap:  # no overlap left (and a[:n - s] would wrap for s >= n)
            continue
        if s >= 0:
            x, y = a[:n - s], b[s:]
        else:
            x, y = a[-s:], b[:n + s]
        if x.size >= min_overlap:
            curve[i] = _pearson(x, y)
    best = np.flatnonzero(curve >= curve.max() - 1e-12)
    idx = int(best[np.argmin(np.abs(shifts[best]))])
    return int(shifts[idx]), float(curve[idx] - np.median(curve)), curve


class WeightFreeSync:
    """Audio-visual synchrony without learned weights (see module docstring). Names: av_corr_conf, av_offset."""

    name = "av_sync"

    def __init__(self, max_offset: int = 15, mouth_box: Optional[Sequence[float]] = None):
        self.max_offset = int(max_offset)
        self.mouth_box = mouth_box

    def score(self, frames, audio, sr: int, fps: float = 25.0) -> dict:
        motion = mouth_motion(frames, self.mouth_box)
        flux = envelope_flux(audio_envelope(audio, sr, fps, motion.size))
        offset, conf, curve = offset_search(motion, flux, self.max_offset)
        return {"av_corr_conf": conf, "av_offset": offset, "av_corr": float(curve[offset + self.max_offset]),
                "av_corr_curve": curve}
