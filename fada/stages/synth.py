"""``fada synth``: write a labelled synthetic talking-head corpus (mp4 clips with audio + labels.json)."""

from __future__ import annotations

import collections
import os
from pathlib import Path

from fada.errors import FadaError


def run(out: str | os.PathLike, count: int = 60, size: int = 128, seed: int = 0, defect_fraction: float = 0.4,
        seconds: tuple[float, float] = (3.0, 5.0), workers: int | None = None, progress: bool = True) -> list[dict]:
    """Generate ``count`` clips under ``out/videos`` and the answer key ``out/labels.json``; returns the labels."""
    from fada.data.synthetic import generate_corpus

    out = Path(out)
    if count < 1:
        raise FadaError(f"--count {count}: must be at least 1")
    if size < 64 or size % 2:
        raise FadaError(f"--size {size}: must be an even number of pixels, at least 64 (96 or more recommended)")
    if not 0.0 <= defect_fraction <= 1.0:
        raise FadaError(f"--defect-fraction {defect_fraction}: must be within 0..1")
    lo, hi = seconds
    if not 0.2 <= lo <= hi:
        raise FadaError(f"--seconds {lo}:{hi}: need 0.2 <= MIN <= MAX")
    if workers is not None and workers < 1:
        raise FadaError(f"--workers {workers}: must be at least 1")
    if out.exists() and not out.is_dir():
        raise FadaError(f"{out}: exists and is not a folder")
    labels = generate_corpus(out, count=count, size=size, seed=seed, defect_fraction=defect_fraction,
                             seconds=(lo, hi), workers=workers, progress=progress)
    kinds = collections.Counter(d for lab in labels for d in (lab["defects"] or ["clean"]))
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    print(f"wrote {len(labels)} clips to {out / 'videos'} ({summary}); answer key {out / 'labels.json'}")
    return labels
