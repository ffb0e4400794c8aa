"""E-FID: Fréchet distance between expression features of generated and reference videos.

``efid`` (as in EMO / FADA): per-frame expression coefficients (e.g. the 64-d expression part of a 3DMM fitted by
Deep3DFaceRecon) supplied by the user, one file per video: ``.npy`` holding a (T, D) array, or ``.safetensors``
holding one tensor (or a tensor named ``exp``, ``expression``, ``coeffs`` or ``coefficients``). All frames of all
videos of a set are pooled and the Fréchet distance of the two pooled sets is reported.

``efid_sub`` (a substitute, not comparable with published E-FID): no face-reconstruction network is bundled, so
expression features are computed from the face crop with OpenCV only: the eye band and the mouth region of each
(aligned, face-centred) crop, in grey, resized to fixed sizes, standardised per frame (zero mean, unit std:
lighting and skin tone drop out), then described with HOG (cell 8 px, block 16 px, stride 16 px, 9 bins) -- the
shape of lids, brows and lips. Mouth 48x32 px -> 216 dims, eyes 64x16 px -> 144 dims; 360 in all. Regions are
fractions of the crop (``DEFAULT_EYES_BOX``, ``DEFAULT_MOUTH_BOX``) unless given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from fada.errors import FadaError, MissingFileError
from fada.metrics.av_sync import DEFAULT_MOUTH_BOX, resolve_box
from fada.metrics.frechet import frechet_from_features

DEFAULT_EYES_BOX = (0.15, 0.25, 0.85, 0.50)
COEFF_KEYS = ("exp", "expression", "coeffs", "coefficients")
_MOUTH_SIZE = (48, 32)  # (w, h)
_EYES_SIZE = (64, 16)


def load_expression_coeffs(path, key: Optional[str] = None) -> np.ndarray:
    """(T, D) float64 expression coefficients of one video from ``.npy`` or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "expression coefficients file", "one .npy or .safetensors (T, D) per video")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(str(path), allow_pickle=False)
        except (ValueError, OSError) as e:
            raise FadaError(f"{path}: not a readable .npy array ({e})") from None
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as e:
            raise FadaError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e})") \
                from None
        if key is not None:
            if key not in tensors:
                raise FadaError(f"{path}: no tensor named {key!r} (has {', '.join(sorted(tensors))})")
            arr = tensors[key]
        elif len(tensors) == 1:
            arr = next(iter(tensors.values()))
        else:
            found = [k for k in COEFF_KEYS if k in tensors]
            if not found:
                raise FadaError(f"{path}: {len(tensors)} tensors and none named {'/'.join(COEFF_KEYS)}")
            arr = tensors[found[0]]
    else:
        raise FadaError(f"{path}: expression coefficients must be .npy or .safetensors")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise FadaError(f"{path}: expected a (T, D) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise FadaError(f"{path}: coefficients contain NaN or infinity")
    return arr


def _pool(arrays: Sequence[np.ndarray], what: str) -> np.ndarray:
    if not arrays:
        raise FadaError(f"no {what} videos")
    dims = {a.shape[1] for a in arrays}
    if len(dims) != 1:
        raise FadaError(f"{what} coefficient files have different dimensions: {sorted(dims)}")
    return np.concatenate(arrays, 0)


def efid_from_coeff_files(generated: Sequence, reference: Sequence, key: Optional[str] = None) -> float:
    """``efid``: Fréchet distance of pooled per-frame coefficients (one file per video in each list)."""
    a = _pool([load_expression_coeffs(p, key) for p in generated], "generated")
    b = _pool([load_expression_coeffs(p, key) for p in reference], "reference")
    if a.shape[1] != b.shape[1]:
        raise FadaError(f"generated and reference coefficients differ in size: {a.shape[1]} vs {b.shape[1]}")
    return frechet_from_features(a, b)


def _hog(win: tuple[int, int]) -> cv2.HOGDescriptor:
    return cv2.HOGDescriptor(win, (16, 16), (16, 16), (8, 8), 9)


def _region(gray: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    r = cv2.resize(gray[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    r = (r - r.mean()) / (r.std() + 1.0)
    # HOG wants 8-bit input: map the standardised patch to 0..255 at a fixed scale (+-4 std).
    return np.clip(r * 32.0 + 128.0, 0, 255).astype(np.uint8)


def expression_features_sub(frames, eyes_box: Optional[Sequence[float]] = None,
                            mouth_box: Optional[Sequence[float]] = None) -> np.ndarray:
    """``efid_sub`` features: (T, H, W, 3) uint8 face crops -> (T, 360) float64 (see module docstring)."""
    v = np.asarray(frames)
    if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8 or v.shape[0] == 0:
        raise FadaError(f"expected uint8 RGB face crops (T, H, W, 3), got {v.dtype} {v.shape}")
    h, w = v.shape[1:3]
    eb = resolve_box(eyes_box, h, w, DEFAULT_EYES_BOX)
    mb = resolve_box(mouth_box, h, w, DEFAULT_MOUTH_BOX)
    hog_m, hog_e = _hog(_MOUTH_SIZE), _hog(_EYES_SIZE)
    feats = []
    for f in v:
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        m = hog_m.compute(_region(g, mb, _MOUTH_SIZE)).reshape(-1)
        e = hog_e.compute(_region(g, eb, _EYES_SIZE)).reshape(-1)
        feats.append(np.concatenate([m, e]))
    return np.asarray(feats, dtype=np.float64)


def efid_sub_from_videos(generated: Sequence, reference: Sequence, **boxes) -> float:
    """``efid_sub``: Fréchet distance of pooled OpenCV expression features of two sets of face-crop videos."""
    a = np.concatenate([expression_features_sub(v, **boxes) for v in generated], 0)
    b = np.concatenate([expression_features_sub(v, **boxes) for v in reference], 0)
    return frechet_from_features(a, b)
