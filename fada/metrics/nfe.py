"""NFE-D and wall-time bookkeeping.

NFE-D (paper §4.2) = denoising-network passes per generated clip: a 25-step DDIM with 3 CFG runs is 75. FADA's
modes: ``teacher`` and ``balanced`` run the three guidance branches (conditional, audio-dropped, reference-dropped)
at every step -> steps x 3; ``fast`` folds the guidance into learnable CFG tokens -> steps x 1. With the paper's
settings: teacher 25 x 3 = 75, balanced 6 x 3 = 18 (4.17x), fast 6 x 1 = 6 (12.5x).
"""

from __future__ import annotations

import time
from typing import Optional

from fada.errors import FadaError

PASSES_PER_STEP = {"teacher": 3, "balanced": 3, "fast": 1}


def nfe_per_clip(mode: str, steps: int) -> int:
    """Denoiser passes for one clip in ``mode`` (teacher / balanced / fast) with ``steps`` sampling steps."""
    if mode not in PASSES_PER_STEP:
        raise FadaError(f"unknown mode {mode!r} (known: {', '.join(PASSES_PER_STEP)})")
    if int(steps) != steps or steps < 1:
        raise FadaError(f"steps must be a positive integer, got {steps!r}")
    return int(steps) * PASSES_PER_STEP[mode]


def nfe_speedup(reference_nfe: int, nfe: int) -> float:
    """e.g. nfe_speedup(75, 6) = 12.5."""
    if nfe <= 0:
        raise FadaError(f"NFE must be positive, got {nfe}")
    return reference_nfe / float(nfe)


def throughput(seconds: float, video_seconds: float) -> float:
    """Wall-clock seconds spent per second of generated video (lower is faster; < 1 is faster than real time)."""
    if video_seconds <= 0:
        raise FadaError(f"generated video length must be positive, got {video_seconds}")
    if seconds < 0:
        raise FadaError(f"elapsed time must be >= 0, got {seconds}")
    return float(seconds) / float(video_seconds)


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds``. ``clock`` may be replaced (tests)."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.start: Optional[float] = None
        self.seconds: float = 0.0

    def __enter__(self) -> "Timer":
        self.start = self.clock()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = float(self.clock() - self.start)

    def per_video_second(self, video_seconds: float) -> float:
        return throughput(self.seconds, video_seconds)
