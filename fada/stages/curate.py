"""`fada curate INPUT --out DIR`: face-cropped, scored clips and the strict / lenient sets A ⊆ B (paper §4.1).

Outputs in DIR (all written atomically):

* ``clips/<id>.mp4`` (square face crop, recipe fps, H.264 + AAC) and ``clips/<id>.wav`` (16-bit, recipe rate);
* ``manifest.jsonl``: every clip with every score and every reason for rejection at both levels, one row per
  video that gave no clip (no_face / too_short) and one per skipped file (corrupt, unreadable, no audio);
* ``A.jsonl`` / ``B.jsonl``: the clips of set A (strict, teacher) and B (lenient, student), A ⊆ B. Paths in
  every manifest are relative to DIR (the manifests' own folder);
* ``report.md``, ``report.json``, ``histograms.png``; ``recipe.yaml`` (the resolved recipe).

Engines: ``local`` processes, or ``ray`` tasks on a cluster (``fada.curation.engines``); the outputs are the same.

Resumable: each source video's result is cached in ``DIR/.cache/<hash of path, size, mtime and the processing
settings>.json`` by the worker that made it; a re-run reuses every cached video whose clips are still on disk and
only re-selects (thresholds are not part of the hash, so changing them re-selects without re-processing).
"""

from __future__ import annotations

import os
from pathlib import Path

from fada.config.recipes import save_resolved
from fada.curation import engines, pipeline
from fada.curation.report import write_report
from fada.curation.select import load_metadata, select
from fada.errors import FadaError, MissingFileError
from fada.utils.io import write_jsonl

CACHE_DIR = ".cache"


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run(input_dir, out, recipe, workers: int | None = None, progress: bool = True, engine: str = "local",
        address: str | None = None) -> dict:
    """Curate every video under ``input_dir`` into ``out``; returns the report summary. ``engine`` 'local'
    (``workers`` processes) or 'ray' (tasks on the Ray cluster at ``address``, or a local Ray instance with
    ``workers`` CPUs when no address is given; ``fada.curation.engines``)."""
    cfg = recipe.curate
    if engine not in engines.ENGINES:
        raise FadaError(f"--engine {engine!r}: choose one of {', '.join(engines.ENGINES)}")
    if address and engine != "ray":
        raise FadaError("--address is for --engine ray")
    if engine == "ray":
        engines.import_ray()  # a missing extra is one line before any work
    input_dir, out = Path(input_dir), Path(out)
    if not input_dir.exists():
        raise MissingFileError(input_dir, "input folder")
    if not input_dir.is_dir():
        raise FadaError(f"{input_dir}: is a file, expected a folder of videos")
    if out.exists() and not out.is_dir():
        raise FadaError(f"{out}: exists and is not a folder")
    if out.resolve() == input_dir.resolve():
        raise FadaError(f"{out}: the output folder must differ from the input folder")
    videos = [v for v in pipeline.find_videos(input_dir) if not _inside(v, out)]
    if not videos:
        raise FadaError(f"{input_dir}: no videos found (looked for {', '.join(pipeline.VIDEO_EXTS)})")
    tags = load_metadata(cfg.metadata)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, out)
    cache_dir = out / CACHE_DIR
    cache_dir.mkdir(exist_ok=True)

    params = pipeline.process_params(cfg)
    results: dict[str, dict] = {}
    jobs, keys = [], {}
    for v in videos:
        rel = v.relative_to(input_dir).as_posix()
        key = pipeline.cache_key(v, rel, params)
        keys[rel] = key
        cached = pipeline.load_cached(cache_dir / f"{key}.json", out)
        if cached is not None and cached.get("source") == rel:
            results[rel] = cached
        else:
            jobs.append({"path": str(v.resolve()), "rel": rel, "out": str(out.resolve()), "params": params,
                         "cache": str((cache_dir / f"{key}.json").resolve())})
    n = workers if workers is not None else (cfg.workers or default_workers())
    if engine == "ray":
        done = engines.run_ray(jobs, address, progress, len(results), len(videos), num_cpus=n)
    else:
        done = engines.run_local(jobs, n, progress, len(results), len(videos))
    for res in done:
        results[res["source"]] = res

    ordered = [results[v.relative_to(input_dir).as_posix()] for v in videos]
    rows = select(ordered, cfg, tags)
    write_jsonl(out / "manifest.jsonl", rows)
    clips = [r for r in rows if r.get("video")]
    write_jsonl(out / "A.jsonl", [r for r in clips if r["in_A"]])
    write_jsonl(out / "B.jsonl", [r for r in clips if r["in_B"]])
    summary = write_report(out, rows, cfg)
    _tidy(out, cache_dir, set(keys.values()), clips)
    summary["reused"] = len(videos) - len(jobs)
    summary["processed"] = len(jobs)
    if progress:
        print(f"curate: {summary['videos']} videos ({summary['reused']} reused) -> {summary['clips']} clips, "
              f"A {summary['A']}, B {summary['B']}, skipped {len(summary['skipped'])}; see {out / 'report.md'}")
    return summary


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _tidy(out: Path, cache_dir: Path, keys: set[str], clips: list[dict]) -> None:
    """Drop cache entries and clip files that no current video produced (earlier runs, other settings)."""
    for f in cache_dir.glob("*.json"):
        if f.stem not in keys:
            f.unlink(missing_ok=True)
    wanted = {r["video"] for r in clips} | {r["wav"] for r in clips}
    clip_dir = out / "clips"
    if clip_dir.is_dir():
        for f in clip_dir.iterdir():
            if f.is_file() and not f.name.startswith(".") and f"clips/{f.name}" not in wanted:
                f.unlink(missing_ok=True)
