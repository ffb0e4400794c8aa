"""``--model DIR --testset LIST.jsonl``: generate every test item with the pipeline, timed, then evaluate.

Test list: one JSON object per line (blank lines and ``#`` lines skipped)::

    {"portrait": "faces/a.png", "audio": "speech/a.wav", "reference": "gt/a.mp4", "name": "a"}

``portrait`` and ``audio`` are required; ``reference`` (the ground-truth video, for FID / FVD / E-FID) and ``name``
(default: the reference's stem, else ``<portrait>_<audio>``) are optional, as are ``seed`` (default ``--seed``) and
``no_crop``. Relative paths are relative to the list's folder. Every line is checked before the model loads.

Cost per video: ``nfe_d`` (denoiser passes per clip, from the pipeline's plan), ``gen_seconds`` (wall time of the
whole call: portrait, audio, sampling, decoding, writing), ``video_seconds`` (frames / fps) and
``wall_s_per_video_s``; the aggregate is total seconds over total video seconds. The model load is timed apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from fada.errors import FadaError, MissingFileError
from fada.utils.io import read_pair_list

KEYS = {"portrait", "audio", "reference", "name", "seed", "no_crop"}
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def safe_name(name: str) -> str:
    s = _SAFE.sub("_", str(name)).strip("._")
    return s or "item"


def read_testset(path) -> list[dict]:
    """Parse and check a test list; every problem names the list and line."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(path, "--testset list")
    if path.is_dir():
        raise FadaError(f"{path}: is a folder, expected a --testset JSONL list")
    base = path.parent
    items: list[dict] = []
    seen: dict[str, int] = {}
    for n, where, row in read_pair_list(path, KEYS, "--testset list"):
        item = {}
        for key in ("portrait", "audio", "reference"):
            if row.get(key) is None:
                continue
            p = Path(str(row[key])).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise MissingFileError(p, f"{key} of {where}")
            item[key] = p
        if "name" in row:
            name = safe_name(row["name"])
        elif "reference" in item:
            name = safe_name(item["reference"].stem)
        else:
            name = safe_name(f"{item['portrait'].stem}_{item['audio'].stem}")
        if name in seen:
            raise FadaError(f"{where}: name {name!r} is already used on line {seen[name]} (names pair the videos)")
        seen[name] = n
        item["name"] = name
        if "seed" in row:
            if not isinstance(row["seed"], int) or isinstance(row["seed"], bool):
                raise FadaError(f"{where}: seed must be an integer")
            item["seed"] = row["seed"]
        item["no_crop"] = bool(row.get("no_crop", False))
        items.append(item)
    if not items:
        raise FadaError(f"{path}: the --testset list has no items")
    return items


def load_pipeline(model_dir, device: Optional[str] = None, decoder: Optional[str] = None):
    """(pipeline, load seconds). ``decoder``: as in ``FadaPipeline.from_pretrained``."""
    from fada.metrics.nfe import Timer
    from fada.pipeline import FadaPipeline

    with Timer() as t:
        pipe = FadaPipeline.from_pretrained(Path(model_dir).expanduser(), device=device, decoder=decoder)
    return pipe, t.seconds


def generate_testset(pipe, items: list[dict], out_dir, *, mode=None, steps=None, cfg_audio=None, cfg_ref=None,
                     seed: int = 0, log: Callable[[str], None] = lambda s: None):
    """Generate every item into ``out_dir/<name>.mp4``. -> (pairing rows (name, video, reference), cost rows by
    name)."""
    from fada.metrics.nfe import Timer

    pipe.plan(mode, steps, cfg_audio, cfg_ref)  # a bad mode / steps / scale fails before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, cost = [], {}
    for i, item in enumerate(items, 1):
        path = out_dir / f"{item['name']}.mp4"
        with Timer() as t:
            res = pipe(item["portrait"], item["audio"], mode=mode, steps=steps, cfg_audio=cfg_audio, cfg_ref=cfg_ref,
                       seed=item.get("seed", seed), out=path, crop=not item["no_crop"], progress=False)
        video_s = res.frames / float(res.fps) if res.fps else 0.0
        cost[item["name"]] = {"nfe_d": int(res.nfe_per_clip), "gen_seconds": float(t.seconds),
                              "video_seconds": float(video_s),
                              "wall_s_per_video_s": float(t.seconds / video_s) if video_s > 0 else None}
        log(f"generated [{i}/{len(items)}] {path.name}: {res.frames} frames, NFE {res.nfe_per_clip} per clip, "
            f"{t.seconds:.2f} s")
        rows.append((item["name"], Path(res.path or path), item.get("reference")))
    return rows, cost
