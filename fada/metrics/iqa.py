"""No-reference image quality, pluggable.

The paper's IQA column is Q-Align (a large multimodal model scoring 1-5); its weights are many GB and not bundled,
so the built-in scores are simple, weight-free, honestly named measures -- not Q-Align and not comparable with the
paper's numbers:

``iqa_sharpness`` (default)
    Variance of the Laplacian (3x3, OpenCV) of the grey frame scaled to [0, 1] after resizing the frame so its
    short side is 256 px (so the value does not depend on resolution), reported as ``log10(1 + 1e4 * var)``;
    averaged over frames. Higher = more fine detail / less blur.
``iqa_colorfulness``
    Hasler & Süsstrunk (2003) colourfulness M = sqrt(s_rg² + s_yb²) + 0.3 sqrt(m_rg² + m_yb²) with rg = R - G,
    yb = (R + G)/2 - B on 0..255 values; averaged over frames. Higher = more colourful.

``register_iqa(name, fn)`` adds another scorer (``fn(frames (T, H, W, 3) uint8) -> float``, higher = better),
e.g. a weighted model the user has locally.
"""

from __future__ import annotations

from typing import Callable, Dict

import cv2
import numpy as np

from fada.errors import FadaError

IQAFn = Callable[[np.ndarray], float]
_REGISTRY: Dict[str, IQAFn] = {}
DEFAULT_IQA = "iqa_sharpness"


def register_iqa(name: str, fn: IQAFn, overwrite: bool = False) -> None:
    if name in _REGISTRY and not overwrite:
        raise FadaError(f"IQA scorer {name!r} is already registered")
    _REGISTRY[name] = fn


def get_iqa(name: str) -> IQAFn:
    if name not in _REGISTRY:
        raise FadaError(f"unknown IQA scorer {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def iqa_names() -> list[str]:
    return sorted(_REGISTRY)


def _frames(frames) -> np.ndarray:
    v = np.asarray(frames)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8 or v.shape[0] == 0:
        raise FadaError(f"expected uint8 RGB frames (T, H, W, 3), got {v.dtype} {v.shape}")
    return v


def sharpness(frames, short_side: int = 256) -> float:
    """``iqa_sharpness`` (see module docstring)."""
    vals = []
    for f in _frames(frames):
        h, w = f.shape[:2]
        s = short_side / float(min(h, w))
        if abs(s - 1.0) > 1e-9:
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
            f = cv2.resize(f, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
        vals.append(np.log10(1.0 + 1e4 * cv2.Laplacian(g, cv2.CV_64F, ksize=3).var()))
    return float(np.mean(vals))


def colorfulness(frames) -> float:
    """``iqa_colorfulness`` (Hasler & Süsstrunk 2003)."""
    vals = []
    for f in _frames(frames):
        r, g, b = (f[..., i].astype(np.float64) for i in range(3))
        rg = r - g
        yb = 0.5 * (r + g) - b
        vals.append(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return float(np.mean(vals))


def iqa_score(frames, name: str = DEFAULT_IQA) -> float:
    return float(get_iqa(name)(_frames(frames)))


register_iqa("iqa_sharpness", sharpness)
register_iqa("iqa_colorfulness", colorfulness)
