"""Guidance-scale sweeps (the paper's Figures 3-4): ``--sweep cfg_audio=1:8:0.5`` or ``--sweep cfg_ref=...``.

``START:STOP:STEP`` gives START, START+STEP, ... up to STOP inclusive (within a tolerance of 1e-6 steps, so
``1:8:0.5`` ends at 8.0); values are computed as START + i*STEP (no accumulated round-off) and rounded to 10
decimals. A comma list (``cfg_ref=1,2,2.5``) is accepted too. Each value generates the test set once (``--model``
``--testset``) and is evaluated; every metric then gets one line chart ``sweep_<param>_<metric>.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

from fada.errors import FadaError

PARAMS = ("cfg_audio", "cfg_ref")
MAX_VALUES = 200


def _num(text: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise FadaError(f"--sweep {spec!r}: {text!r} is not a number (expected e.g. cfg_audio=1:8:0.5)") from None
    if not math.isfinite(v):
        raise FadaError(f"--sweep {spec!r}: {text!r} is not a finite number")
    return v


def parse_sweep(spec: str) -> tuple[str, list[float]]:
    """``'cfg_audio=1:8:0.5'`` -> ('cfg_audio', [1.0, 1.5, ..., 8.0]). Problems are one-line FadaErrors."""
    if not isinstance(spec, str) or "=" not in spec:
        raise FadaError(f"--sweep {spec!r}: expected PARAM=START:STOP:STEP, e.g. cfg_audio=1:8:0.5")
    param, _, rng = spec.partition("=")
    param = param.strip().replace("-", "_")
    if param not in PARAMS:
        raise FadaError(f"--sweep {spec!r}: can sweep {' or '.join(PARAMS)}, not {param!r}")
    rng = rng.strip()
    if ":" in rng:
        parts = rng.split(":")
        if len(parts) != 3:
            raise FadaError(f"--sweep {spec!r}: expected START:STOP:STEP, e.g. {param}=1:8:0.5")
        start, stop, step = (_num(p.strip(), spec) for p in parts)
        if step <= 0:
            raise FadaError(f"--sweep {spec!r}: STEP must be positive")
        if stop < start:
            raise FadaError(f"--sweep {spec!r}: STOP is smaller than START")
        n = int(math.floor((stop - start) / step + 1e-6)) + 1
        if n > MAX_VALUES:
            raise FadaError(f"--sweep {spec!r}: {n} values; at most {MAX_VALUES}")
        values = [round(start + i * step, 10) for i in range(n)]
    else:
        values = [_num(p.strip(), spec) for p in rng.split(",") if p.strip()]
        if not values:
            raise FadaError(f"--sweep {spec!r}: no values")
        if len(set(values)) != len(values):
            raise FadaError(f"--sweep {spec!r}: repeated values")
    if min(values) < 0:
        raise FadaError(f"--sweep {spec!r}: guidance scales must be >= 0")
    return param, values


def value_label(v: float) -> str:
    return f"{v:g}"


def plot_sweep(report: dict, folder, exclude=()) -> list[Path]:
    """One PNG per metric (``sweep_<param>_<metric>.png`` in ``folder``) of the aggregate against the scale."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from fada.evaluation.metrics import direction
    from fada.evaluation.report import sweep_keys
    from fada.utils.io import atomic_path

    param = report["sweep"]["param"]
    folder = Path(folder)
    paths = []
    for key in sweep_keys(report):
        if key in exclude:
            continue
        pts = [(e[param], e["metrics"][key]) for e in report["entries"]
               if e["metrics"].get(key) is not None and math.isfinite(e["metrics"][key])]
        if not pts:
            continue
        xs, ys = zip(*pts)
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        ax.plot(xs, ys, marker="o")
        ax.set_xlabel(param.replace("_", " "))
        d = direction(key)
        ax.set_ylabel(key + (f" ({d} is better)" if d else ""))
        ax.set_title(f"{key} vs {param}")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = folder / f"sweep_{param}_{key}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths
