"""Portraits for generation: read any png/jpg/webp, find the face, crop it square as curation does.

Light on purpose (numpy + OpenCV only): ``fada generate`` checks the portrait with it before it loads a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from fada.data.face import Box, FaceDetector, crop_square, to_rgb
from fada.errors import FadaError, MissingFileError

DETECT_MAX_SIDE = 1024   # faces are searched on a copy no larger than this...
DETECT_MIN_SIDE = 256    # ...and no smaller than this (tiny portraits are upscaled for the detector)


def face_margin() -> float:
    """The margin curation crops with (``curate.face_margin``'s default), so generated faces are framed alike."""
    from fada.config.schema import CurateConfig

    return float(CurateConfig().face_margin)


def read_portrait(path) -> np.ndarray:
    """A png/jpg/webp (RGB, RGBA, grayscale; 8 or 16 bit) as uint8 RGB (H, W, 3), RGBA composited on white."""
    import cv2

    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(p, "portrait image")
    if p.is_dir():
        raise FadaError(f"{p}: is a folder, expected a portrait image (png/jpg/webp)")
    try:
        img = cv2.imdecode(np.fromfile(str(p), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):
        img = None
    if img is None or img.size == 0:
        raise FadaError(f"{p}: cannot be read as an image (expected png/jpg/webp)")
    return to_uint8_rgb(img, bgr=True)


def to_uint8_rgb(img: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Any image array (gray, RGB, RGBA; uint8, uint16 or float in [0, 1]) -> uint8 RGB (H, W, 3)."""
    import cv2

    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or min(img.shape[:2]) < 1:
        raise FadaError(f"portrait: unsupported image shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype.kind == "f":
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FadaError(f"portrait: unsupported pixel type {img.dtype}")
    if bgr and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(to_rgb(img))


def find_face(image: np.ndarray, detector: Optional[FaceDetector] = None, source: str = "portrait") -> Box:
    """The largest face of a uint8 RGB image, searched on a copy scaled to DETECT_MIN_SIDE..DETECT_MAX_SIDE
    pixels (so huge images stay fast and tiny ones reach the detector's smallest window). No face -> a one-line
    FadaError suggesting --no-crop."""
    import cv2

    h, w = image.shape[:2]
    scale = 1.0
    if max(h, w) > DETECT_MAX_SIDE:
        scale = DETECT_MAX_SIDE / max(h, w)
    elif min(h, w) < DETECT_MIN_SIDE:
        scale = DETECT_MIN_SIDE / min(h, w)
    small = image
    if scale != 1.0:
        dsize = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(image, dsize, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    box = (detector or FaceDetector()).detect(small)
    if box is None:
        raise FadaError(f"{source}: no face found in the portrait; pass --no-crop (Python API: crop=False) "
                        f"to use the whole image as is")
    return Box(box.x / scale, box.y / scale, box.w / scale, box.h / scale)


def prepare_portrait(image: np.ndarray, size: int, crop: bool = True, detector: Optional[FaceDetector] = None,
                     source: str = "portrait", margin: Optional[float] = None) -> np.ndarray:
    """uint8 RGB image -> (size, size, 3): the largest face cropped square with curation's margin, or
    (crop=False) the central square of the image, resized."""
    import cv2

    if not crop:
        h, w = image.shape[:2]
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        sq = image[y0:y0 + s, x0:x0 + s]
        interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
        return np.ascontiguousarray(cv2.resize(sq, (size, size), interpolation=interp))
    box = find_face(image, detector, source)
    return np.ascontiguousarray(crop_square(image, box, face_margin() if margin is None else margin, size))
