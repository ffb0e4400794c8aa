"""Where a talking-head video is right or wrong: inside the mouth box, and everywhere else.

A whole-frame PSNR mixes the two things a talking-portrait model must do: draw the mouth the audio asks for, and
keep everything else (background, hair, the face outside the mouth) as the reference shows it. A still copy of the
reference frame does the second perfectly and the first not at all, so a model is only useful where it beats the
copy inside the mouth and stays close to it elsewhere. These are pure functions over uint8 frames (T, H, W, 3),
the truth and a video cropped alike; the mouth box is given as fractions (x0, y0, x1, y1) of the frame (by default
curate's mouth box in a face crop, ``fada.evaluation.faces.mouth_box``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from fada.errors import FadaError

MAX_PSNR = 100.0  # dB for an exact match (MSE 0), so reports stay finite JSON


def box_mask(height: int, width: int, box: Sequence[float]) -> np.ndarray:
    """(H, W) bool: True inside ``box`` = fractions (x0, y0, x1, y1), pixel edges rounded to the nearest pixel."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise FadaError(f"box {tuple(box)}: expected fractions 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1")
    c0, c1 = int(round(x0 * width)), max(int(round(x1 * width)), int(round(x0 * width)) + 1)
    r0, r1 = int(round(y0 * height)), max(int(round(y1 * height)), int(round(y0 * height)) + 1)
    mask = np.zeros((height, width), bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _pair(truth, video) -> tuple[np.ndarray, np.ndarray]:
    t, v = np.asarray(truth), np.asarray(video)
    n = min(len(t), len(v))
    if n == 0 or t.ndim != 4 or t.shape[1:] != v.shape[1:]:
        raise FadaError(f"truth {t.shape} and video {v.shape}: expected frames (T, H, W, 3) of one size")
    return t[:n].astype(np.float64), v[:n].astype(np.float64)


def masked_psnr(truth, video, mask: np.ndarray) -> float:
    """PSNR (dB, peak 255) from the mean squared error over the ``mask`` pixels of every frame (channels alike)."""
    t, v = _pair(truth, video)
    mse = float(((t - v) ** 2)[:, mask].mean())
    return MAX_PSNR if mse == 0 else min(MAX_PSNR, 10.0 * np.log10(255.0 ** 2 / mse))


def psnr(truth, video) -> float:
    """Whole-frame PSNR (dB, peak 255) from the mean squared error over every frame: skimage's
    ``peak_signal_noise_ratio`` over the clip, except that an exact copy scores ``MAX_PSNR`` instead of +inf (and a
    divide-by-zero warning), as does anything closer than that."""
    t, v = _pair(truth, video)
    return masked_psnr(t, v, np.ones(t.shape[1:3], bool))


def region_psnr(truth, video, box: Sequence[float]) -> dict:
    """{"mouth": PSNR inside ``box``, "elsewhere": PSNR outside it}."""
    t = np.asarray(truth)
    inside = box_mask(t.shape[1], t.shape[2], box)
    return {"mouth": masked_psnr(truth, video, inside), "elsewhere": masked_psnr(truth, video, ~inside)}


def mouth_change(frames, box: Sequence[float]) -> np.ndarray:
    """(T,) mean absolute difference (grey levels, all channels) of the box's pixels from the first frame's."""
    f = np.asarray(frames, dtype=np.float64)
    inside = box_mask(f.shape[1], f.shape[2], box)
    region = f[:, inside]
    return np.abs(region - region[:1]).mean(axis=(1, 2))


def mouth_correlation(truth, video, box: Sequence[float]) -> float:
    """Pearson correlation over frames between the video's and the truth's ``mouth_change`` (1: the mouth opens
    and closes when the truth's does, in proportion; 0 for a still video)."""
    t, v = _pair(truth, video)
    a, b = mouth_change(t, box), mouth_change(v, box)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def roughness(frames) -> float:
    """Mean absolute difference of horizontally adjacent pixels (grey levels): speckle raises it, blur lowers it."""
    f = np.asarray(frames, dtype=np.float64)
    return float(np.abs(np.diff(f, axis=-2)).mean())


def region_scores(truth, video, box: Optional[Sequence[float]] = None) -> dict:
    """The mouth/elsewhere PSNR, the mouth correlation and the noise ratio (``roughness`` of the video over the
    truth's) of one video against its truth."""
    if box is None:
        from fada.evaluation.faces import mouth_box

        box = mouth_box()
    t, v = _pair(truth, video)
    psnr = region_psnr(t, v, box)
    rt = roughness(t)
    return {"psnr_mouth": psnr["mouth"], "psnr_elsewhere": psnr["elsewhere"],
            "mouth_corr": mouth_correlation(t, v, box), "noise_ratio": roughness(v) / rt if rt > 0 else float("nan")}
