"""A labelled synthetic talking-head corpus: procedurally drawn faces that speak procedurally made speech.

Each clip is a real H.264/AAC mp4 (25 fps, 16 kHz mono by default). The face's mouth opens with a smoothed RMS
envelope of the clip's own speech (``mouth_opening``), the head moves gently, and a share of clips carries a known
defect: ``out_of_sync`` (audio shifted by 8-15 frames after rendering), ``blur`` (blur, downscale and heavy
compression), ``shaky`` (the whole camera jitters), ``static`` (the mouth stays shut while the audio plays) and
``no_face`` (background and an object only). ``labels.json`` is the answer key; curation never reads it.

The renderer is public so that held-out ground truth can be rendered for any identity and audio::

    rng = np.random.default_rng(7)
    ident = sample_identity(rng)
    audio = synth_speech(4.0, rng, pitch=ident["pitch"])
    frames = render_clip(ident, audio, fps=25, size=128, seed=7)   # (100, 128, 128, 3) uint8 RGB

Everything is deterministic for a seed: same seed, same labels, same decoded frames (x264 runs single-threaded).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

DEFECTS = ("out_of_sync", "blur", "shaky", "static", "no_face")
SAMPLE_RATE = 16000
FPS = 25
SIZE = 128

_SS = 2  # supersampling factor of the drawing canvas (anti-aliasing and sub-pixel motion)
_SHIFT = 2  # fixed-point bits for OpenCV drawing coordinates
_ONE = 1 << _SHIFT

_SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 140, 100), (160, 106, 70), (120, 80, 56),
         (250, 210, 180), (210, 160, 120)]
_HAIR = [(20, 16, 14), (60, 40, 25), (110, 70, 35), (170, 120, 60), (200, 170, 110), (90, 30, 20), (130, 130, 130),
         (40, 30, 30)]
_IRIS = [(60, 40, 25), (40, 70, 120), (60, 110, 70), (90, 70, 40), (30, 30, 30)]
_VOWELS = {  # F1, F2, F3 (Hz), adult average
    "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (300, 2250, 3000),
    "o": (570, 840, 2410), "u": (320, 870, 2240), "ae": (660, 1720, 2410),
}


def _color(rng: np.random.Generator, base, jitter: float) -> list[int]:
    c = np.asarray(base, dtype=np.float64) + rng.normal(0.0, jitter, 3)
    return [int(v) for v in np.clip(c, 0, 255)]


# --------------------------------------------------------------------------------------------------- identity


_CASCADE = None


def haar_detector():
    """OpenCV's Haar frontal-face cascade (the one the corpus is checked against), loaded once per process."""
    global _CASCADE
    if _CASCADE is None:
        import cv2

        _CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return _CASCADE


def detect_faces(frame: np.ndarray, min_size: int = 30) -> np.ndarray:
    """Haar detections (x, y, w, h) on an RGB uint8 frame, OpenCV defaults (scale 1.1, 5 neighbours)."""
    import cv2

    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    found = haar_detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    return np.asarray(found, dtype=np.int64).reshape(-1, 4)


def _detectable(ident: dict, size: int = SIZE) -> bool:
    """Is the face found by the Haar cascade with the mouth shut, half open and wide open, head tilted?"""
    import cv2

    W = size * _SS
    bg = _render_background(ident, W, W)
    for opening, angle in ((0.0, 0.0), (0.6, -3.0), (1.0, 3.0)):
        canvas = bg.copy()
        _draw_head(canvas, ident, 0.5 * W, 0.5 * W, angle, 1.0, opening, 0.0, W)
        if len(detect_faces(cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA))) == 0:
            return False
    return True


def sample_identity(rng: np.random.Generator, name: str | None = None, detectable: bool = True) -> dict:
    """Draw a face identity (JSON-serialisable dict): shape, skin, hair, eyes, mouth, clothes, background, voice.

    With ``detectable`` (default) draws are repeated until OpenCV's Haar frontal-face cascade finds the face at
    128 px with the mouth shut and open (a few percent of cartoon faces fool it; real corpora are pre-filtered
    the same way). Deterministic for the generator's state.
    """
    for _ in range(50):
        ident = _sample_identity_once(rng, name)
        if not detectable or _detectable(ident):
            return ident
    return ident


def _sample_identity_once(rng: np.random.Generator, name: str | None) -> dict:
    skin = _color(rng, _SKIN[rng.integers(len(_SKIN))], 8)
    hair = _color(rng, _HAIR[rng.integers(len(_HAIR))], 8)
    lum = lambda c: float(np.dot(c, (0.299, 0.587, 0.114)))  # noqa: E731
    for _ in range(100):  # a background that stands apart from the skin (as lit portraits do)
        bg_base = rng.uniform(30, 235, 3)
        if abs(lum(bg_base) - lum(skin)) > 45:
            break
    bg2 = np.clip(bg_base + rng.normal(0, 45, 3), 0, 255)
    ident = {
        "name": name or f"id_{int(rng.integers(1_000_000)):06d}",
        "skin": skin,
        "face_w": float(rng.uniform(0.21, 0.25)),  # half width, fraction of the frame
        "face_ratio": float(rng.uniform(1.2, 1.3)),  # half height / half width
        "jaw": float(rng.uniform(0.0, 1.0)),  # 0 round chin .. 1 pointed chin
        "hair": hair,
        "hair_style": str(rng.choice(["short", "long", "curly", "bun", "crop"])),
        "hair_volume": float(rng.uniform(0.9, 1.2)),
        "iris": _color(rng, _IRIS[rng.integers(len(_IRIS))], 6),
        "eye_spacing": float(rng.uniform(0.36, 0.44)),
        "eye_size": float(rng.uniform(0.21, 0.26)),
        "brow": float(rng.uniform(0.06, 0.1)),
        "nose": float(rng.uniform(0.8, 1.2)),
        "mouth_w": float(rng.uniform(0.36, 0.48)),
        "lip": _color(rng, (np.asarray(skin) * np.array([0.8, 0.5, 0.5]) + np.array([40, 0, 0])).clip(0, 255), 8),
        "shirt": [int(v) for v in rng.uniform(20, 235, 3)],
        "bg": {"kind": str(rng.choice(["gradient", "panels", "room", "blobs"])),
               "c1": [int(v) for v in bg_base], "c2": [int(v) for v in bg2],
               "seed": int(rng.integers(2**31))},
        "pitch": float(rng.choice([rng.uniform(95, 140), rng.uniform(170, 240)])),
        "formant_scale": float(rng.uniform(0.92, 1.12)),
    }
    return ident


# --------------------------------------------------------------------------------------------------- speech


def _resonator(f: float, bw: float, sr: int):
    r = math.exp(-math.pi * bw / sr)
    a = [1.0, -2.0 * r * math.cos(2 * math.pi * f / sr), r * r]
    b = [1.0 - r]  # roughly unit gain near the peak
    return b, a


def synth_speech(duration: float, rng: np.random.Generator, sr: int = SAMPLE_RATE, pitch: float | None = None,
                 formant_scale: float = 1.0) -> np.ndarray:
    """Speech-like mono float32 audio: voiced syllables (glottal pulses through three formant resonators, with a
    pitch contour), consonant noise bursts, word gaps and phrase pauses. Peak about 0.7."""
    from scipy.signal import lfilter

    n = int(round(duration * sr))
    out = np.zeros(n, dtype=np.float64)
    f0_base = float(pitch) if pitch is not None else float(rng.uniform(95, 240))
    t = float(rng.uniform(0.05, 0.3))  # leading silence
    vowels = list(_VOWELS)
    syl_in_word = 0
    word_len = int(rng.integers(1, 4))
    words_in_phrase, phrase_len = 0, int(rng.integers(2, 6))
    phrase_start = t
    while t < duration - 0.12:
        # optional consonant onset: band-limited noise burst
        if rng.random() < 0.6:
            cl = float(rng.uniform(0.03, 0.08))
            i0, i1 = int(t * sr), min(n, int((t + cl) * sr))
            if i1 > i0:
                noise = rng.standard_normal(i1 - i0)
                b, a = _resonator(float(rng.uniform(2500, 6000)), 1500.0, sr)
                burst = lfilter(b, a, noise)
                burst *= np.hanning(i1 - i0) * float(rng.uniform(0.05, 0.15)) / (np.abs(burst).max() + 1e-9)
                out[i0:i1] += burst
            t += cl * 0.8
        # voiced nucleus
        vl = float(rng.uniform(0.09, 0.26))
        i0, i1 = int(t * sr), min(n, int((t + vl) * sr))
        m = i1 - i0
        if m > 32:
            tt = np.arange(m) / sr
            decl = 1.0 - 0.12 * min(1.0, (t - phrase_start) / 2.0)  # pitch declination over a phrase
            f0 = f0_base * decl * float(rng.uniform(0.9, 1.12)) * (1 + float(rng.uniform(-0.08, 0.08)) * tt / vl)
            f0 = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * tt))  # slight vibrato
            phase = np.cumsum(f0 / sr)
            frac = phase - np.floor(phase)
            src = np.where(frac < 0.6, np.sin(np.pi * frac / 0.6) ** 2, 0.0)  # Rosenberg-like glottal pulse
            src = np.diff(src, prepend=src[0]) + 0.02 * rng.standard_normal(m)  # radiation + breath
            v = vowels[rng.integers(len(vowels))]
            y = src
            for k, (f, bw) in enumerate(zip(_VOWELS[v], (80.0, 100.0, 140.0))):
                b, a = _resonator(f * formant_scale, bw, sr)
                y = y + (0.6 if k else 1.0) * lfilter(b, a, src) * 8
            env = np.ones(m)
            att, rel = min(m // 3, int(0.025 * sr)), min(m // 2, int(0.06 * sr))
            env[:att] = np.sin(np.linspace(0, np.pi / 2, att)) ** 2
            env[m - rel:] = np.cos(np.linspace(0, np.pi / 2, rel)) ** 2
            y = y * env
            y *= float(rng.uniform(0.55, 1.0)) / (np.abs(y).max() + 1e-9)
            out[i0:i1] += y
        t += vl
        # gaps: within word, between words, between phrases
        syl_in_word += 1
        if syl_in_word < word_len:
            t += float(rng.uniform(0.01, 0.05))
            continue
        syl_in_word, word_len = 0, int(rng.integers(1, 4))
        words_in_phrase += 1
        if words_in_phrase >= phrase_len:
            words_in_phrase, phrase_len = 0, int(rng.integers(2, 6))
            t += float(rng.uniform(0.3, 0.7))
            phrase_start = t
        else:
            t += float(rng.uniform(0.06, 0.16))
    peak = np.abs(out).max()
    if peak > 0:
        out *= 0.7 / peak
    out += 0.002 * rng.standard_normal(n)  # room noise floor
    return out.astype(np.float32)


def frame_rms(audio: np.ndarray, fps: float = FPS, sr: int = SAMPLE_RATE, n_frames: int | None = None) -> np.ndarray:
    """RMS of the audio under each video frame (frame k spans samples [k*sr/fps, (k+1)*sr/fps))."""
    audio = np.asarray(audio, dtype=np.float64)
    if n_frames is None:
        n_frames = int(len(audio) * fps // sr)
    edges = np.round(np.arange(n_frames + 1) * sr / fps).astype(int)
    out = np.zeros(n_frames)
    for k in range(n_frames):
        seg = audio[edges[k]:edges[k + 1]]
        out[k] = math.sqrt(float(np.mean(seg * seg))) if len(seg) else 0.0
    return out


def mouth_opening(audio: np.ndarray, fps: float = FPS, sr: int = SAMPLE_RATE,
                  n_frames: int | None = None) -> np.ndarray:
    """Mouth opening in [0, 1] per video frame: the smoothed RMS envelope of ``audio``, normalised per clip."""
    rms = frame_rms(audio, fps, sr, n_frames)
    if len(rms) == 0:
        return rms
    ref = float(np.percentile(rms, 95))
    if ref < 1e-4:
        return np.zeros_like(rms)
    x = np.clip(rms / ref, 0.0, 1.0)
    x = np.where(x < 0.08, 0.0, x)  # room noise keeps the mouth shut
    x = np.convolve(np.pad(x, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    return np.clip(x, 0.0, 1.0) ** 0.8


# --------------------------------------------------------------------------------------------------- drawing


def _render_background(ident: dict, w: int, h: int) -> np.ndarray:
    """The identity's background at canvas size (w, h), uint8 RGB."""
    import cv2

    bg = ident["bg"]
    rng = np.random.default_rng(bg["seed"])
    c1, c2 = np.asarray(bg["c1"], np.float32), np.asarray(bg["c2"], np.float32)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(c1 * (1 - yy) + c2 * yy, (h, w, 3)).copy()
    kind = bg["kind"]
    if kind == "panels":
        for _ in range(int(rng.integers(3, 7))):
            x0 = int(rng.uniform(0, w))
            pw = int(rng.uniform(0.05, 0.2) * w)
            col = np.clip(c1 + rng.normal(0, 30, 3), 0, 255)
            img[:, x0:x0 + pw] = img[:, x0:x0 + pw] * 0.5 + col * 0.5
    elif kind == "room":
        floor = int(rng.uniform(0.65, 0.85) * h)
        img[floor:] = np.clip(c2 * 0.7, 0, 255)
        wx, wy = int(rng.uniform(0.0, 0.2) * w), int(rng.uniform(0.05, 0.2) * h)
        ww, wh = int(rng.uniform(0.15, 0.25) * w), int(rng.uniform(0.2, 0.35) * h)
        if rng.random() < 0.5:
            wx = w - wx - ww
        cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), (235, 240, 245), -1)
        cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), tuple(float(v) for v in c2 * 0.5), max(1, w // 100))
    elif kind == "blobs":
        for _ in range(int(rng.integers(4, 9))):
            col = tuple(float(v) for v in np.clip(c1 + rng.normal(0, 35, 3), 0, 255))
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(0.05, 0.18) * w), col,
                       -1, cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), w / 60)
    else:  # gradient with a soft light spot
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.5) * h
        yy2, xx2 = np.mgrid[:h, :w].astype(np.float32)
        spot = np.exp(-(((xx2 - cx) ** 2 + (yy2 - cy) ** 2) / (2 * (0.25 * w) ** 2)))[..., None]
        img = img * (1 - 0.25 * spot) + 255 * 0.25 * spot
    img = img + rng.normal(0, 3.0, img.shape).astype(np.float32)  # sensor grain (static)
    return np.clip(img, 0, 255).astype(np.uint8)


class _Pen:
    """Draws in face coordinates (pixels from the face centre, before the head's rotation) onto a canvas."""

    def __init__(self, canvas: np.ndarray, cx: float, cy: float, angle_deg: float, scale: float):
        self.c, self.cx, self.cy, self.deg, self.s = canvas, cx, cy, angle_deg, scale
        th = math.radians(angle_deg)
        self.cos, self.sin = math.cos(th), math.sin(th)

    def pt(self, u: float, v: float) -> tuple[int, int]:
        u, v = u * self.s, v * self.s
        x = self.cx + u * self.cos - v * self.sin
        y = self.cy + u * self.sin + v * self.cos
        return int(round(x * _ONE)), int(round(y * _ONE))

    def ellipse(self, u, v, au, av, color, angle=0.0, start=0, end=360, thickness=-1):
        import cv2

        ax = (max(1, int(round(au * self.s * _ONE))), max(1, int(round(av * self.s * _ONE))))
        th = thickness if thickness < 0 else max(1, int(round(thickness * self.s)))
        cv2.ellipse(self.c, self.pt(u, v), ax, self.deg + angle, start, end, tuple(int(x) for x in color), th,
                    cv2.LINE_AA, _SHIFT)

    def poly(self, pts, color):
        import cv2

        arr = np.array([self.pt(u, v) for u, v in pts], dtype=np.int32)
        cv2.fillPoly(self.c, [arr], tuple(int(x) for x in color), cv2.LINE_AA, _SHIFT)

    def line(self, u0, v0, u1, v1, color, thickness):
        import cv2

        cv2.line(self.c, self.pt(u0, v0), self.pt(u1, v1), tuple(int(x) for x in color),
                 max(1, int(round(thickness * self.s))), cv2.LINE_AA, _SHIFT)


def _shade(color, f: float) -> list[int]:
    """Darken (f < 1) or lighten (f > 1) a colour; darkening also subtracts a little so dark skin keeps contrast."""
    off = (1.0 - f) * 60.0 if f < 1 else 0.0
    return [int(np.clip(c * f - off, 0, 255)) for c in color]


def _draw_head(canvas: np.ndarray, ident: dict, cx: float, cy: float, angle: float, scale: float, opening: float,
               blink: float, size_px: int) -> None:
    """Draw shoulders, neck, hair, ears, face, brows, eyes, nose and mouth. ``size_px``: canvas width."""
    a = ident["face_w"] * size_px  # half width of the face
    b = a * ident["face_ratio"]
    skin, hair = ident["skin"], ident["hair"]
    p = _Pen(canvas, cx, cy, angle, scale)
    style, vol = ident["hair_style"], ident["hair_volume"]

    # shoulders and neck (no rotation for the body: draw around an un-rotated pen)
    body = _Pen(canvas, cx, cy, 0.0, scale)
    body.ellipse(0, b + 0.42 * size_px, 0.5 * size_px, 0.32 * size_px, ident["shirt"])
    body.poly([(-0.42 * a, 0.55 * b), (0.42 * a, 0.55 * b), (0.5 * a, b + 0.15 * size_px),
               (-0.5 * a, b + 0.15 * size_px)], _shade(skin, 0.8))
    # hair behind the head
    if style == "long":
        p.ellipse(0, -0.1 * b, 1.22 * a * vol, 1.08 * b, hair)
        p.poly([(-1.2 * a * vol, -0.1 * b), (1.2 * a * vol, -0.1 * b), (1.15 * a * vol, 1.05 * b),
                (-1.15 * a * vol, 1.05 * b)], hair)
    elif style == "bun":
        p.ellipse(0, -1.12 * b, 0.45 * a, 0.32 * a, hair)
    # ears
    for sgn in (-1, 1):
        p.ellipse(sgn * 0.98 * a, -0.05 * b, 0.16 * a, 0.28 * a, _shade(skin, 0.88))
    # face: darker rim, lighter centre
    chin = 1.0 + 0.08 * ident["jaw"]
    p.ellipse(0, 0, a, b, _shade(skin, 0.86))
    p.ellipse(0, 0.05 * b * (chin - 1), a * 0.9, b * 0.93 * chin, skin)
    p.ellipse(0, -0.05 * b, a * 0.65, b * 0.7, _shade(skin, 1.04))
    # hair on top
    if style in ("short", "long", "bun", "curly"):
        p.ellipse(0, -0.58 * b, 1.04 * a * vol, 0.58 * b * vol, hair, start=180, end=360)
        p.ellipse(0, -0.58 * b, 1.0 * a * vol, 0.1 * b, hair)  # the hairline's soft bottom edge
        if style == "curly":
            for k in range(-4, 5):
                p.ellipse(k * 0.23 * a * vol, -0.62 * b - 0.4 * b * math.cos(k / 4 * 1.2), 0.16 * a, 0.16 * a, hair)
    else:  # crop: thin cap
        p.ellipse(0, -0.62 * b, 0.95 * a, 0.4 * b, hair, start=180, end=360)
    # brows
    ey = -0.2 * b
    ex = ident["eye_spacing"] * a * 1.05
    es = ident["eye_size"] * a
    brow_c = _shade(hair, 0.7)
    for sgn in (-1, 1):
        p.ellipse(sgn * ex, ey - 0.9 * es, 1.2 * es, 0.45 * es, brow_c, start=200, end=340,
                  thickness=ident["brow"] * a / scale)
    # eye sockets (darker band), whites, iris, pupil, lids
    for sgn in (-1, 1):
        p.ellipse(sgn * ex, ey, 1.45 * es, 0.9 * es, _shade(skin, 0.7))
        if blink > 0.5:
            p.line(sgn * ex - es, ey, sgn * ex + es, ey, (40, 25, 20), 0.18 * es / scale * 1.0 + 0.6)
            continue
        p.ellipse(sgn * ex, ey, es, 0.55 * es, (215, 212, 205))
        p.ellipse(sgn * ex, ey, 0.52 * es, 0.52 * es, ident["iris"])
        p.ellipse(sgn * ex, ey, 0.26 * es, 0.26 * es, (10, 10, 10))
        p.ellipse(sgn * ex, ey, es, 0.55 * es, (35, 25, 20), start=180, end=360, thickness=0.16 * es / scale + 0.5)
    # nose: bridge shading, tip, nostrils
    nz = ident["nose"]
    p.ellipse(0, 0.02 * b, 0.09 * a * nz, 0.26 * b, _shade(skin, 1.1))  # lit bridge
    p.ellipse(0, 0.29 * b, 0.2 * a * nz, 0.07 * a * nz, _shade(skin, 0.78))  # shadow under the tip
    p.ellipse(0, 0.24 * b, 0.15 * a * nz, 0.09 * a * nz, _shade(skin, 1.06))
    for sgn in (-1, 1):
        p.ellipse(sgn * 0.09 * a * nz, 0.27 * b, 0.05 * a, 0.03 * a, _shade(skin, 0.45))
    # mouth: lips, dark opening, teeth
    my = ident.get("mouth_y", 0.55) * b
    mw = ident["mouth_w"] * a
    op = float(np.clip(opening, 0.0, 1.0))
    lip = ident["lip"]
    lip_h = 0.08 * a + 0.17 * a * op
    p.ellipse(0, my + 0.1 * lip_h * op, mw * (1 - 0.1 * op), lip_h, lip)
    if op > 0.04:
        inner_h = 0.15 * a * op
        p.ellipse(0, my + 0.1 * lip_h * op, 0.8 * mw * (1 - 0.1 * op), inner_h, (60, 20, 25))
        if op > 0.5:  # a hint of upper teeth
            p.ellipse(0, my + 0.1 * lip_h * op - 0.7 * inner_h, 0.45 * mw, 0.15 * inner_h, (150, 140, 135))
    else:
        p.line(-0.9 * mw, my, 0.9 * mw, my, _shade(lip, 0.45), 0.03 * a / scale + 0.5)


def _draw_object(canvas: np.ndarray, rng_params: dict, t: float, size_px: int) -> None:
    """A non-face object for ``no_face`` clips: a potted plant, a lamp or a ball, drifting slowly."""
    import cv2

    kind, x, y, col = rng_params["kind"], rng_params["x"], rng_params["y"], rng_params["color"]
    x = (x + 0.03 * math.sin(2 * math.pi * 0.3 * t)) * size_px
    y = y * size_px
    s = rng_params["scale"] * size_px
    col = tuple(int(c) for c in col)
    if kind == "plant":
        cv2.rectangle(canvas, (int(x - 0.12 * s), int(y + 0.1 * s)), (int(x + 0.12 * s), int(y + 0.45 * s)),
                      (150, 90, 50), -1, cv2.LINE_AA)
        for k in range(7):
            ang = -math.pi / 2 + (k - 3) * 0.35
            cv2.ellipse(canvas, (int(x + 0.25 * s * math.cos(ang)), int(y + 0.25 * s * math.sin(ang))),
                        (int(0.18 * s), int(0.06 * s)), math.degrees(ang), 0, 360, col, -1, cv2.LINE_AA)
    elif kind == "lamp":
        cv2.line(canvas, (int(x), int(y - 0.1 * s)), (int(x), int(y + 0.5 * s)), (60, 60, 60), max(1, int(0.04 * s)))
        pts = np.array([(x - 0.25 * s, y), (x + 0.25 * s, y), (x + 0.12 * s, y - 0.3 * s),
                        (x - 0.12 * s, y - 0.3 * s)], np.int32)
        cv2.fillPoly(canvas, [pts], col, cv2.LINE_AA)
    else:  # ball
        cv2.circle(canvas, (int(x), int(y)), int(0.22 * s), col, -1, cv2.LINE_AA)
        cv2.circle(canvas, (int(x - 0.07 * s), int(y - 0.07 * s)), int(0.06 * s), (250, 250, 250), -1, cv2.LINE_AA)


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, freqs=(0.15, 0.35, 0.6)) -> np.ndarray:
    """A smooth random signal in about [-1, 1]: a sum of a few slow sinusoids with random phases."""
    t = np.arange(n) / fps
    sig = np.zeros(n)
    for f in freqs:
        sig += np.sin(2 * np.pi * f * rng.uniform(0.7, 1.3) * t + rng.uniform(0, 2 * np.pi))
    return sig / len(freqs)


def render_clip(identity: dict | None, audio: np.ndarray, fps: float = FPS, size: int = SIZE, seed: int = 0,
                sample_rate: int = SAMPLE_RATE, *, static: bool = False, shaky: float = 0.0,
                opening: np.ndarray | None = None, n_frames: int | None = None, head_motion: bool = True,
                hold_pose: bool = False) -> np.ndarray:
    """Render frames (T, size, size, 3) uint8 RGB of ``identity`` speaking ``audio``.

    T = floor(len(audio) / sample_rate * fps) unless ``n_frames``. The mouth follows ``mouth_opening(audio)``
    (or ``opening`` when given; all zeros with ``static``). ``seed`` drives head motion and blinks. ``shaky`` > 0
    jitters the whole camera by about that fraction of the frame. ``identity=None`` draws no face (a background
    with an object), as in ``no_face`` clips. ``head_motion`` False keeps the head still and the eyes open, so the
    audio-driven mouth is the clip's only motion (what a model can be asked to reproduce exactly). ``hold_pose``
    keeps the head at the clip's first pose and draws everything else (mouth, blinks) as without it: the same seed's
    clip as a model that held what no input tells it would draw it at best.
    """
    import cv2

    if n_frames is None:
        n_frames = int(len(audio) * fps // sample_rate)
    rng = np.random.default_rng(seed)
    if opening is None:
        opening = mouth_opening(audio, fps, sample_rate, n_frames)
    opening = np.zeros(n_frames) if static else np.resize(np.asarray(opening, dtype=np.float64), n_frames)
    W = size * _SS
    scene_ident = identity
    if identity is None:  # background from a random identity, and an object instead of a person
        scene_ident = sample_identity(rng, detectable=False)
        obj = {"kind": str(rng.choice(["plant", "lamp", "ball"])), "x": float(rng.uniform(0.3, 0.7)),
               "y": float(rng.uniform(0.4, 0.65)), "scale": float(rng.uniform(0.35, 0.6)),
               "color": [int(v) for v in rng.uniform(30, 220, 3)]}
    bg = _render_background(scene_ident, W, W)
    # gentle head motion, blinks
    dx = 0.018 * W * _smooth_noise(rng, n_frames, fps)
    dy = 0.012 * W * _smooth_noise(rng, n_frames, fps)
    ang = 3.5 * _smooth_noise(rng, n_frames, fps)
    sc = 1.0 + 0.02 * _smooth_noise(rng, n_frames, fps)
    if not head_motion:
        dx, dy, ang, sc = dx * 0, dy * 0, ang * 0, sc * 0 + 1.0
    elif hold_pose:
        dx, dy, ang, sc = (np.full_like(v, v[0]) for v in (dx, dy, ang, sc))
    blink = np.zeros(n_frames)
    t_next = rng.uniform(1.0, 3.5) if head_motion else float("inf")
    while t_next * fps < n_frames:
        k = int(t_next * fps)
        blink[k:k + 2] = 1.0
        t_next += rng.uniform(2.0, 5.0)
    base_y = 0.5 * W
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    if shaky > 0:
        jit = rng.normal(0, 1, (n_frames, 3))
        jit = 0.6 * jit + 0.4 * np.roll(jit, 1, axis=0)  # mostly frame-to-frame jitter
    for k in range(n_frames):
        canvas = bg.copy()
        if identity is None:
            _draw_object(canvas, obj, k / fps, W)
        else:
            _draw_head(canvas, identity, 0.5 * W + dx[k], base_y + dy[k], ang[k], sc[k], opening[k], blink[k], W)
        if shaky > 0:
            m = cv2.getRotationMatrix2D((W / 2, W / 2), 1.5 * jit[k, 2], 1.0 + 0.6 * shaky)
            m[:, 2] += shaky * W * jit[k, :2]
            canvas = cv2.warpAffine(canvas, m, (W, W), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames[k] = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return frames


def degrade(frames: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Blur + downscale + heavy JPEG compression (``blur`` clips); strength ~1 means strong."""
    import cv2

    n, h, w, _ = frames.shape
    out = np.empty_like(frames)
    small = (max(8, int(w / (2 + 2 * strength))), max(8, int(h / (2 + 2 * strength))))
    quality = int(max(5, 25 - 15 * strength))
    for k in range(n):
        f = cv2.GaussianBlur(frames[k], (0, 0), 1.2 * strength * w / 128)
        f = cv2.resize(cv2.resize(f, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
        ok, buf = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out[k] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out


def shift_audio(audio: np.ndarray, frames: int, fps: float = FPS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Delay (frames > 0) or advance (frames < 0) audio by whole video frames, zero-filled, same length."""
    s = int(round(frames * sr / fps))
    out = np.zeros_like(audio)
    if s > 0:
        out[s:] = audio[:len(audio) - s]
    elif s < 0:
        out[:len(audio) + s] = audio[-s:]
    else:
        out[:] = audio
    return out


# --------------------------------------------------------------------------------------------------- corpus


def plan_corpus(count: int = 60, size: int = SIZE, seed: int = 0, defect_fraction: float = 0.4,
                seconds: tuple[float, float] = (3.0, 5.0), fps: int = FPS, sample_rate: int = SAMPLE_RATE,
                identities: int | None = None) -> list[dict]:
    """The corpus's labels, decided before anything is rendered (cheap; deterministic for ``seed``).

    round(count * defect_fraction) clips get one defect each, cycling through ``DEFECTS`` in a shuffled order so
    that every type appears once there are at least five defective clips. About two clips per identity.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0.0 <= defect_fraction <= 1.0:
        raise ValueError("defect_fraction must be within [0, 1]")
    lo, hi = float(seconds[0]), float(seconds[1])
    if not 0 < lo <= hi:
        raise ValueError("seconds must be (min, max) with 0 < min <= max")
    rng = np.random.default_rng([seed, 0x5EED])
    n_ids = identities or max(1, math.ceil(count / 2))
    idents = [sample_identity(rng, name=f"id_{i:03d}") for i in range(n_ids)]
    n_def = int(round(count * defect_fraction))
    order = list(DEFECTS)
    rng.shuffle(order)
    kinds = [order[i % len(order)] for i in range(n_def)] + [None] * (count - n_def)
    perm = rng.permutation(count)
    kinds = [kinds[i] for i in perm]
    id_of = [i % n_ids for i in range(count)]
    id_of = [id_of[i] for i in rng.permutation(count)]
    labels = []
    for i in range(count):
        n_frames = int(round(rng.uniform(lo, hi) * fps))
        kind = kinds[i]
        shift = 0
        if kind == "out_of_sync":
            shift = int(rng.integers(8, 16)) * int(rng.choice([-1, 1]))
        ident = idents[id_of[i]]
        labels.append({
            "file": f"videos/clip_{i:04d}.mp4",
            "clip": f"clip_{i:04d}",
            "identity": None if kind == "no_face" else ident["name"],
            "defects": [] if kind is None else [kind],
            "sync_shift_frames": shift,  # > 0: the audio lags the mouth by this many frames
            "frames": n_frames,
            "seconds": n_frames / fps,
            "fps": fps,
            "size": size,
            "sample_rate": sample_rate,
            "seed": int(rng.integers(2**31)),
            "blur_strength": float(rng.uniform(0.8, 1.2)) if kind == "blur" else 0.0,
            "shake": float(rng.uniform(0.035, 0.06)) if kind == "shaky" else 0.0,
            "identity_params": None if kind == "no_face" else ident,
        })
    return labels


def clip_from_label(label: dict) -> tuple[np.ndarray, np.ndarray]:
    """Re-create one planned clip (a ``plan_corpus`` / labels.json row) in memory, defects applied.

    Returns (frames uint8 (T, size, size, 3) RGB, audio float32 mono). For the clean ground truth of a defective
    clip, pass the label with ``defects=[]`` and ``sync_shift_frames=0``.
    """
    rng = np.random.default_rng(label["seed"])
    fps, sr, size, n_frames = label["fps"], label["sample_rate"], label["size"], label["frames"]
    ident = label["identity_params"]
    pitch = ident["pitch"] if ident else None
    fscale = ident["formant_scale"] if ident else 1.0
    audio = synth_speech(n_frames / fps, rng, sr, pitch=pitch, formant_scale=fscale)
    defects = label["defects"]
    frames = render_clip(ident if "no_face" not in defects else None, audio, fps, size,
                         seed=int(rng.integers(2**31)), sample_rate=sr, static="static" in defects,
                         shaky=label.get("shake", 0.0) if "shaky" in defects else 0.0, n_frames=n_frames)
    if "blur" in defects:
        frames = degrade(frames, label.get("blur_strength", 1.0))
    if label.get("sync_shift_frames"):
        audio = shift_audio(audio, label["sync_shift_frames"], fps, sr)
    return frames, audio


def render_labelled_clip(label: dict, out_dir: str | os.PathLike) -> str:
    """Render one planned clip and write it as ``out_dir / label["file"]`` (mp4, H.264 + AAC); returns the path."""
    import cv2

    from fada.data.media import VideoWriter

    cv2.setNumThreads(1)
    frames, audio = clip_from_label(label)
    crf = 40 if "blur" in label["defects"] else 20  # blur clips are also heavily compressed
    path = Path(out_dir) / label["file"]
    with VideoWriter(path, label["fps"], (label["size"], label["size"]), audio=audio,
                     sample_rate=label["sample_rate"], crf=crf, preset="veryfast", threads=1) as w:
        w.write(frames)
    return str(path)


def _render_job(args):
    return render_labelled_clip(*args)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def generate_corpus(out_dir: str | os.PathLike, count: int = 60, size: int = SIZE, seed: int = 0,
                    defect_fraction: float = 0.4, seconds: tuple[float, float] = (3.0, 5.0),
                    workers: int | None = None, fps: int = FPS, sample_rate: int = SAMPLE_RATE,
                    progress: bool = True) -> list[dict]:
    """Write ``out_dir/videos/clip_XXXX.mp4`` and ``out_dir/labels.json``; returns the labels.

    ``workers`` processes render in parallel (default: the usable cores); the output does not depend on it.
    Clips named clip_XXXX.mp4 left in ``out_dir/videos`` by an earlier, larger run are removed.
    """
    from tqdm import tqdm

    from fada.errors import FadaError
    from fada.utils.io import write_json

    if size < 64 or size % 2:
        raise FadaError(f"--size {size}: must be even and at least 64 (the face detector needs about 30 px faces)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FadaError(f"{out_dir}: exists and is not a folder")
    labels = plan_corpus(count, size, seed, defect_fraction, seconds, fps, sample_rate)
    vids = out_dir / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    keep = {Path(lab["file"]).name for lab in labels}
    for old in vids.glob("clip_*.mp4"):
        if re.fullmatch(r"clip_\d{4,}\.mp4", old.name) and old.name not in keep:
            old.unlink()
    workers = default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, max(1, count))
    jobs = [(lab, str(out_dir)) for lab in labels]
    with tqdm(total=count, desc="synth clips", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                _render_job(job)
                bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
                for _ in pool.map(_render_job, jobs, chunksize=1):
                    bar.update(1)
    write_json(out_dir / "labels.json", labels)
    return labels
