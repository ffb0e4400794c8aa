"""Face crops for the sync metrics.

SyncNet (and the weight-free sync) want the talking face cropped square. Our generator writes square portraits
that *are* such crops already: ``prepare_portrait`` crops the face with curation's margin (``face_margin()``, 0.4 of
the face side on each side), and the model keeps that framing. So:

* the Haar detector (``fada.data.face.FaceDetector``) is run on every ``every``-th frame; if it finds a face in at
  least half of them, boxes are interpolated and median-smoothed over time (``smooth_boxes``) and every frame is
  cropped square with curation's margin (``crop_square``), as curation and SyncNet's own pipeline (crop scale 0.4)
  do -- this handles full-frame reference videos;
* otherwise (tiny frames, stylised faces the cascade misses) the whole frame is taken as the face crop: the fixed
  heuristic that fits our generator's output.

Either way the mouth region is the curation mouth box mapped into a crop with that margin
(``mouth_box_in_crop``), i.e. about x 0.31-0.69, y 0.59-0.84 of the crop.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

FACE_FOUND_FRACTION = 0.5
STILL_FRACTION = 0.15  # detections within 15% of the face size of their median: one fixed crop


def crop_margin() -> float:
    from fada.data.portrait import face_margin

    return face_margin()


def mouth_box(margin: Optional[float] = None) -> tuple[float, float, float, float]:
    from fada.curation.scores import mouth_box_in_crop

    return mouth_box_in_crop(crop_margin() if margin is None else margin)


class FaceCropper:
    """``crops(frames) -> (crops (T, S, S, 3), how)`` with how = ``detected``, ``tracked`` or ``whole-frame``."""

    def __init__(self, every: int = 5, max_size: int = 224, detect: bool = True):
        self.every = max(1, int(every))
        self.max_size = int(max_size)
        self.detect = detect
        self._detector = None

    def _det(self):
        if self._detector is None:
            from fada.data.face import FaceDetector

            self._detector = FaceDetector()
        return self._detector

    def crops(self, frames: np.ndarray) -> tuple[np.ndarray, str]:
        from fada.data.face import crop_square, smooth_boxes

        frames = np.asarray(frames)
        t, h, w = frames.shape[:3]
        if self.detect and min(h, w) >= 48:  # the cascade's smallest window is 24 px; a face needs more
            det = self._det()
            sampled = range(0, t, self.every)
            boxes = [None] * t
            for i in sampled:
                boxes[i] = det.detect(frames[i])
            found = sum(boxes[i] is not None for i in sampled)
            if found >= FACE_FOUND_FRACTION * len(sampled):
                size = min(self.max_size, min(h, w))
                size -= size % 2
                margin = crop_margin()
                dets = np.stack([b.as_array() for b in boxes if b is not None])
                med = np.median(dets, axis=0)
                spread = np.abs(dets - med).max(axis=0)
                if spread.max() <= STILL_FRACTION * max(med[2], med[3]):
                    # a still head (a generated portrait): one box, so detector jitter does not become motion
                    return np.stack([crop_square(f, med, margin, size) for f in frames]), "detected"
                smoothed, _ = smooth_boxes(boxes, window=9)
                return np.stack([crop_square(f, b, margin, size) for f, b in zip(frames, smoothed)]), "tracked"
        if h != w:  # centre square
            s = min(h, w)
            y0, x0 = (h - s) // 2, (w - s) // 2
            frames = frames[:, y0:y0 + s, x0:x0 + s]
        return np.ascontiguousarray(frames), "whole-frame"


def portrait_crops(frames: np.ndarray, size: int, detector=None) -> np.ndarray:
    """Every frame of a reference video cropped as generation crops its portrait: the face found in the first
    frame (``fada.data.portrait.find_face``), curation's margin, ``size`` px square; so a video generated from that
    first frame lines up with it pixel for pixel. No face in the first frame: FadaError."""
    from fada.data.face import crop_square
    from fada.data.portrait import face_margin, find_face

    box = find_face(frames[0], detector)
    return np.stack([crop_square(f, box, face_margin(), size) for f in frames])
