"""Pure scoring functions of data curation (paper §4.1): numpy arrays in, numbers out, no file I/O.

Filter dimensions and the scores that measure them (every score is stored in the manifest):

* image quality: ``sharpness`` (variance of the Laplacian of the grey face region resampled to a fixed
  ``ANALYSIS_SIZE`` square, so the value means the same at any source resolution; a small face upscaled to that
  size reads as blurry, as it would in training), ``brightness`` (mean luma of the face region, 0-255) and
  ``face_size`` (median face-box side in source pixels);
* audio-visual sync: offset (frames) + confidence from an offset search (``fada.metrics.av_sync`` weight-free
  measure on the mouth region, or SyncNet when weights are given);
* background stability: ``background_motion``, the mean absolute grey-level change between consecutive frames
  (0-255 scale, frames first reduced to at most ``BG_WIDTH`` px wide) outside the person: the face box grown by
  ``BG_MARGIN`` and everything below it (the torso) are masked out;
* degree of movement: ``head_motion`` (mean face-centre displacement per frame as a fraction of the face size,
  from the raw detections) and ``mouth_motion`` (mean of ``av_sync.mouth_motion`` over the clip).

Track segmentation (``face_segments``, ``slice_segment``) is also here: pure index arithmetic.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np

ANALYSIS_SIZE = 128
"""Side of the square the face region is resampled to before sharpness/brightness are measured."""
BG_WIDTH = 160
"""Frames are reduced to at most this width before background motion is measured."""
BG_MARGIN = 0.2
"""The person region masked out of background motion: the face box grown by this fraction of its size on every
side (hair, ears), and the column below it (neck, torso)."""
MOUTH_IN_FACE = (0.22, 0.62, 0.78, 0.98)
"""Mouth region as fractions (x0, y0, x1, y1) of a Haar frontal-face box (mouth and lips, chin excluded)."""


def gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def face_patch(frame: np.ndarray, box: Sequence[float], size: int = ANALYSIS_SIZE) -> np.ndarray:
    """Grey face region (the box itself, square around its centre, no margin) resampled to ``size`` x ``size``."""
    from fada.data.face import crop_square

    return crop_square(gray(frame), np.asarray(box, dtype=np.float64), 0.0, size)


def sharpness(patch: np.ndarray) -> float:
    """Variance of the Laplacian (3x3) of a grey patch; higher is sharper."""
    return float(cv2.Laplacian(patch.astype(np.float32), cv2.CV_32F, ksize=1).var())


def brightness(patch: np.ndarray) -> float:
    """Mean grey level (0-255) of a patch."""
    return float(np.mean(patch))


def bg_frame(frame: np.ndarray, width: int = BG_WIDTH) -> tuple[np.ndarray, float]:
    """(grey frame reduced to at most ``width`` px wide as float32, the scale factor applied)."""
    g = gray(frame)
    h, w = g.shape[:2]
    if w <= width:
        return g.astype(np.float32), 1.0
    s = width / w
    small = cv2.resize(g, (width, max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32), s


def person_mask(shape: tuple[int, int], box: Sequence[float], margin: float, scale: float = 1.0) -> np.ndarray:
    """Boolean (H, W) mask, True on the background: outside the square of the face box grown by ``margin`` of its
    size on every side (hair, ears) and outside the column below that square (neck, torso). ``box`` is in source pixels, ``scale`` maps
    source pixels to the mask's."""
    h, w = shape
    x, y, bw, bh = (float(v) * scale for v in box)
    side = max(bw, bh) * (1 + 2 * margin)
    cx, cy = x + bw / 2, y + bh / 2
    x0, x1 = int(math.floor(cx - side / 2)), int(math.ceil(cx + side / 2))
    y0 = int(math.floor(cy - side / 2))
    mask = np.ones((h, w), dtype=bool)
    mask[max(0, y0):, max(0, x0):max(0, min(w, x1))] = False
    return mask


def background_motion(prev: np.ndarray, cur: np.ndarray, mask: np.ndarray) -> Optional[float]:
    """Mean |cur - prev| over the background mask (0-255); None when the mask is empty."""
    n = int(mask.sum())
    if n == 0:
        return None
    return float(np.abs(cur - prev)[mask].mean())


def head_motion(frame_idx: Sequence[int], boxes: np.ndarray) -> float:
    """Mean displacement of the face-box centre per frame, as a fraction of the box size, over consecutive
    detections (frame indices ``frame_idx``, boxes (n, 4) x, y, w, h). 0 with fewer than two detections."""
    idx = np.asarray(frame_idx, dtype=np.float64)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(idx) < 2:
        return 0.0
    c = b[:, :2] + b[:, 2:] / 2
    size = np.maximum(b[:, 2:].max(axis=1), 1.0)
    step = np.diff(idx)
    disp = np.linalg.norm(np.diff(c, axis=0), axis=1) / ((size[1:] + size[:-1]) / 2) / np.maximum(step, 1)
    return float(disp.mean())


def mouth_box_in_crop(margin: float, mouth: Sequence[float] = MOUTH_IN_FACE) -> tuple[float, float, float, float]:
    """The mouth region as fractions of a square face crop made with ``crop_square(.., margin, ..)``.

    A face box spans [m, 1 - m] of the crop with m = margin / (1 + 2 margin)."""
    m = margin / (1 + 2 * margin)
    f = 1 - 2 * m
    return tuple(float(np.clip(m + f * v, 0.0, 1.0)) for v in mouth)  # type: ignore[return-value]


def weight_free_sync(crops: np.ndarray, audio: np.ndarray, sr: int, fps: float, margin: float,
                     max_offset: int = 15) -> dict:
    """Weight-free sync of face crops (T, S, S, 3) and their audio: {offset, confidence, mouth_motion, method}.

    ``offset`` > 0: the audio lags the video by that many frames."""
    from fada.metrics.av_sync import audio_envelope, envelope_flux, mouth_motion, offset_search

    motion = mouth_motion(crops, mouth_box_in_crop(margin))
    flux = envelope_flux(audio_envelope(audio, sr, fps, motion.size))
    offset, conf, _ = offset_search(motion[1:], flux[1:], max_offset=min(max_offset, max(0, motion.size - 6)))
    return {"offset": int(offset), "confidence": float(conf), "mouth_motion": float(motion[1:].mean()),
            "method": "weight_free"}


# ------------------------------------------------------------------------------------------- segmentation


def _continues(box, prev, max_jump: float) -> Optional[float]:
    """Centre distance in face sizes if ``box`` can continue a track ending in ``prev`` (else None)."""
    size, psize = max(box[2], box[3]), max(prev[2], prev[3])
    if max(size, psize) > 2 * max(1.0, min(size, psize)):
        return None
    d = math.hypot(box[0] + box[2] / 2 - prev[0] - prev[2] / 2, box[1] + box[3] / 2 - prev[1] - prev[3] / 2)
    d /= max(1.0, (size + psize) / 2)
    return d if d <= max_jump else None


def choose_track(candidates: Sequence[Sequence[Sequence[float]]], max_skip: int,
                 max_jump: float = 1.0) -> list[Optional[list[float]]]:
    """One face box per detection frame from all the detector's candidates (x, y, w, h) there.

    Candidates are linked into tracks across detection frames (nearest centre within ``max_jump`` face sizes,
    sizes within 2x, at most ``max_skip`` detection frames missed in between); each frame then takes its
    candidate on the longest track (ties: the larger box). A persistent face so wins over a larger false hit
    that flickers, and a one-frame input falls back to the largest candidate."""
    tracks: list[dict] = []  # {"last": frame position, "box": last box, "n": members}
    member: list[list[int]] = []  # per frame, per candidate: track index
    active: list[int] = []  # tracks that may still continue
    for j, cands in enumerate(candidates):
        active = [t for t in active if j - tracks[t]["last"] - 1 <= max_skip]
        ids, used = [], set()
        for box in sorted(cands, key=lambda b: -b[2] * b[3]):
            best, best_d = None, None
            for t in active:
                tr = tracks[t]
                if t in used or tr["last"] >= j:
                    continue
                d = _continues(box, tr["box"], max_jump)
                if d is not None and (best_d is None or d < best_d):
                    best, best_d = t, d
            if best is None:
                tracks.append({"last": j, "box": box, "n": 0})
                best = len(tracks) - 1
                active.append(best)
            tracks[best].update(last=j, box=box)
            tracks[best]["n"] += 1
            used.add(best)
            ids.append((best, box))
        member.append(ids)
    out: list[Optional[list[float]]] = []
    for ids in member:
        if not ids:
            out.append(None)
            continue
        t, box = max(ids, key=lambda tb: (tracks[tb[0]]["n"], tb[1][2] * tb[1][3]))
        out.append([float(v) for v in box])
    return out


def face_segments(det_idx: Sequence[int], boxes: Sequence, n_frames: int, every: int, max_gap: int,
                  max_jump: float = 1.0) -> list[tuple[int, int]]:
    """Frame ranges [start, end) covered by one face track.

    ``det_idx`` are the frames where detection ran (every ``every``-th) and ``boxes`` what it found there (x, y, w,
    h or None); each detection stands for ``every`` frames. Misses covering more than ``max_gap`` frames between
    two successful detections (``i - prev - every > max_gap``), or consecutive detections whose centres jump by
    more than ``max_jump`` box sizes (or whose sizes differ by more than 2x: another face, a false hit), end one
    segment and start another. A segment reaches half a detection interval past its first and last detection."""
    hits = [(int(i), np.asarray(b, dtype=np.float64)) for i, b in zip(det_idx, boxes) if b is not None]
    if not hits:
        return []
    half = max(0, every // 2)
    segs: list[tuple[int, int]] = []
    start, (prev, pbox) = hits[0][0], hits[0]
    for i, box in hits[1:]:
        size, psize = max(box[2], box[3]), max(pbox[2], pbox[3])
        jump = np.linalg.norm((box[:2] + box[2:] / 2) - (pbox[:2] + pbox[2:] / 2)) / max(1.0, (size + psize) / 2)
        if i - prev - every > max_gap or jump > max_jump or max(size, psize) > 2 * max(1.0, min(size, psize)):
            segs.append((max(0, start - half), min(n_frames, prev + half + 1)))
            start = i
        prev, pbox = i, box
    segs.append((max(0, start - half), min(n_frames, prev + half + 1)))
    return segs


def slice_segment(start: int, end: int, min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Cut [start, end) into clips of min_len..max_len frames: too short -> none; too long -> equal parts
    (greedy max_len pieces, dropping a short remainder, when equal parts would fall below min_len)."""
    n = end - start
    if n < min_len:
        return []
    if n <= max_len:
        return [(start, end)]
    k = math.ceil(n / max_len)
    if n // k >= min_len:
        edges = [start + (n * i) // k for i in range(k + 1)]
        return [(edges[i], edges[i + 1]) for i in range(k)]
    out, s = [], start
    while end - s >= min_len:
        e = min(end, s + max_len)
        out.append((s, e))
        s = e
    return out


def nearest_source_index(k: int, src_fps: float, fps: float) -> int:
    """Source frame shown at output frame ``k`` (time k / fps) when resampling by nearest frame."""
    return int(math.floor(k * src_fps / fps + 0.5))
