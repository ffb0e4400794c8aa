"""Face detection (OpenCV Haar cascades), temporal smoothing of face boxes, and square crops with margin.

Shared by curation (face tracks in videos) and generation (one portrait). The cascade file ships with
opencv-python-headless 4.x (5.x dropped them, hence the <5 pin).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from fada.errors import FadaError, MissingFileError

CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    @property
    def size(self) -> float:
        return max(self.w, self.h)

    def as_array(self) -> np.ndarray:
        return np.array([self.x, self.y, self.w, self.h], dtype=np.float64)


class FaceDetector:
    """Largest frontal face per image. ``min_size`` is the smallest face side as a fraction of the shorter side."""

    def __init__(self, min_size: float = 0.08, scale_factor: float = 1.1, min_neighbors: int = 5):
        if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 dropped the Haar cascades
            raise FadaError(f"OpenCV {cv2.__version__} has no Haar face detector: install opencv-python-headless<5 "
                            "(or pass --no-crop with a portrait already cropped to the face)")
        path = os.path.join(getattr(cv2, "data", None).haarcascades if hasattr(cv2, "data") else "", CASCADE)
        if not os.path.isfile(path):
            raise MissingFileError(path, "Haar face cascade", "install opencv-python-headless<5")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise FadaError(f"{path}: OpenCV could not load the face cascade")
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors

    def detect_all(self, image: np.ndarray) -> list[Box]:
        """Every face candidate, largest first. ``image``: uint8 RGB (H,W,3), RGBA or grayscale (H,W).

        Histogram equalisation helps dim, flat footage but loses some well-exposed faces: when it finds
        nothing, the plain grey image is tried too."""
        gray = to_gray(image)
        side = max(12, int(self.min_size * min(gray.shape[:2])))
        faces = ()
        for g in (cv2.equalizeHist(gray), gray):
            faces = self.cascade.detectMultiScale(g, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                  minSize=(side, side))
            if len(faces):
                break
        boxes = [Box(float(x), float(y), float(w), float(h)) for x, y, w, h in faces]
        return sorted(boxes, key=lambda b: -b.w * b.h)

    def detect(self, image: np.ndarray) -> Box | None:
        """The largest face, or None."""
        faces = self.detect_all(image)
        return faces[0] if faces else None

    def track(self, frames: np.ndarray, every: int = 1) -> list[Box | None]:
        """Detect on every ``every``-th frame of (T,H,W,3); frames in between take the nearest detection's box."""
        idx = list(range(0, len(frames), max(1, every)))
        found = {i: self.detect(frames[i]) for i in idx}
        out: list[Box | None] = []
        for t in range(len(frames)):
            nearest = min(idx, key=lambda i: abs(i - t))
            out.append(found[nearest])
        return out


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image.astype(np.uint8)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def smooth_boxes(boxes: list[Box | None], window: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Fill gaps by linear interpolation and smooth centres/sizes with a centred moving median.

    Returns (T,4) boxes and a (T,) mask of frames with a real detection. All-None → zeros and an all-False mask.
    """
    T = len(boxes)
    found = np.array([b is not None for b in boxes])
    arr = np.zeros((T, 4))
    if not found.any():
        return arr, found
    known = np.flatnonzero(found)
    vals = np.stack([boxes[i].as_array() for i in known])
    for k in range(4):
        arr[:, k] = np.interp(np.arange(T), known, vals[:, k])
    half = window // 2
    smoothed = np.empty_like(arr)
    for t in range(T):
        smoothed[t] = np.median(arr[max(0, t - half): t + half + 1], axis=0)
    return smoothed, found


def crop_square(image: np.ndarray, box: Box | np.ndarray, margin: float, size: int) -> np.ndarray:
    """Square crop centred on the face with ``margin`` (fraction of the face side) on every side, resized to
    ``size``; parts outside the image are filled by edge replication."""
    if isinstance(box, Box):
        box = box.as_array()
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    side = max(w, h) * (1 + 2 * margin)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    H, W = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + s - W, y0 + s - H)
    if pad:
        widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, widths, mode="edge")
        x0, y0 = x0 + pad, y0 + pad
    crop = image[y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Any uint8 image (grayscale, RGB, RGBA composited on white) → RGB (H,W,3)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        rgb = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return image[:, :, :3]
