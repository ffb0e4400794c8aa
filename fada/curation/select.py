"""Thresholds -> strict set A and lenient set B, with the reasons every clip was rejected (paper §3.2, §4.1).

A clip is in A when it passes every strict filter and in B when it passes every lenient one. The lenient
thresholds are never stricter than the strict ones (``CurateConfig.check``), so A ⊆ B by construction; ``select``
asserts it for every clip anyway.

Manifest rows come in three kinds:

* a clip: ``id, source_video, video, wav, start, end, frames, fps, face, scores, reasons, in_A, in_B``;
* a video that gave no clip (``status`` "no_face" or "too_short"): one row, no clip paths, with that reason at
  both levels;
* a file that could not be used (corrupt, unreadable, no audio): ``skipped`` (a short code) and ``detail``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from fada.errors import FadaError


@dataclass(frozen=True)
class Filter:
    name: str
    """The reason recorded when a clip fails it."""
    group: str
    """The paper's filter dimension it belongs to."""
    passes: Callable[[dict, object], bool]
    """(scores, FilterThresholds) -> passes?"""


def _sync_conf_ok(s: dict, t) -> bool:
    floor = t.min_syncnet_confidence if s.get("sync_method") == "syncnet" else t.min_sync_confidence
    return s["sync_confidence"] >= floor


FILTERS: tuple[Filter, ...] = (
    Filter("source", "data source", lambda s, t: not t.sources or s.get("source") in t.sources),
    Filter("sharpness", "image quality", lambda s, t: s["sharpness"] >= t.min_sharpness),
    Filter("brightness", "image quality", lambda s, t: t.min_brightness <= s["brightness"] <= t.max_brightness),
    Filter("face_size", "image quality", lambda s, t: s["face_size"] >= t.min_face_size),
    Filter("sync_offset", "audio-visual sync", lambda s, t: abs(s["sync_offset"]) <= t.max_sync_offset),
    Filter("sync_confidence", "audio-visual sync", _sync_conf_ok),
    # no background visible (the person fills the frame): nothing to judge, the filter passes
    Filter("background_motion", "background stability",
           lambda s, t: s["background_motion"] is None or s["background_motion"] <= t.max_background_motion),
    Filter("head_motion", "degree of movement", lambda s, t: s["head_motion"] <= t.max_head_motion),
    Filter("mouth_motion", "degree of movement", lambda s, t: s["mouth_motion"] >= t.min_mouth_motion),
)
FILTER_NAMES = tuple(f.name for f in FILTERS)
VIDEO_REASONS = ("no_face", "too_short")
"""Reasons that reject a whole source video (it gave no clip)."""


def reasons(scores: dict, thresholds) -> list[str]:
    """Names of the filters a clip's scores fail under one threshold set (empty: it passes)."""
    return [f.name for f in FILTERS if not f.passes(scores, thresholds)]


def load_metadata(path: Optional[str | os.PathLike]) -> dict[str, str]:
    """Data-source tags per video: a JSON object ``{video: tag}`` (or ``{video: {"source": tag}}``), a JSON list
    or JSONL of ``{"file"|"video"|"path": ..., "source"|"tag": ...}`` rows. Videos are named by their path
    relative to the input folder, their file name, or their stem."""
    if not path:
        return {}
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FadaError(f"{path}: cannot read the metadata file ({e.strerror})") from None
    data = None
    try:
        data = None if path.suffix.lower() == ".jsonl" else json.loads(text)
        if isinstance(data, dict) and any(k in data for k in ("file", "video", "path")):
            data = [data]  # a one-row JSONL file
    except ValueError:
        pass
    if data is None:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as e:
            raise FadaError(f"{path}: metadata is neither JSON nor JSONL ({e})") from None
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            tag = v.get("source", v.get("tag")) if isinstance(v, dict) else v
            if tag is not None:
                out[str(k)] = str(tag)
    elif isinstance(data, list):
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise FadaError(f"{path}: metadata row {i + 1} is not an object")
            key = row.get("file", row.get("video", row.get("path")))
            tag = row.get("source", row.get("tag"))
            if key is None or tag is None:
                raise FadaError(f"{path}: metadata row {i + 1} needs 'file' (or 'video'/'path') and 'source'")
            out[str(key)] = str(tag)
    else:
        raise FadaError(f"{path}: metadata must be a JSON object or a list of rows")
    return out


def source_tag(tags: dict[str, str], rel: str) -> Optional[str]:
    """The tag of the video at ``rel`` (relative path, then file name, then stem), or None."""
    p = Path(rel)
    for key in (rel, p.name, p.stem):
        if key in tags:
            return tags[key]
    return None


def select(results: list[dict], cfg, tags: Optional[dict[str, str]] = None) -> list[dict]:
    """Per-video results (``pipeline.process_video``) -> manifest rows with reasons, in_A, in_B."""
    from fada.curation.pipeline import clip_prefix

    tags = tags or {}
    rows: list[dict] = []
    for res in results:
        rel = res["source"]
        tag = source_tag(tags, rel)
        status = res["status"]
        if status == "skipped":
            rows.append({"id": clip_prefix(rel), "source_video": rel, "skipped": res["skipped"],
                         "detail": res.get("detail", ""), "in_A": False, "in_B": False})
            continue
        if status in VIDEO_REASONS:
            rows.append({"id": clip_prefix(rel), "source_video": rel, "video": None, "wav": None,
                         "status": status, "detail": res.get("detail", ""),
                         "face_detection_rate": res.get("face_detection_rate"), "scores": {"source": tag},
                         "reasons": {"strict": [status], "lenient": [status]}, "in_A": False, "in_B": False})
            continue
        for clip in res["clips"]:
            scores = {"source": tag, **{k: v for k, v in clip["scores"].items() if k != "source"}}
            strict, lenient = reasons(scores, cfg.strict), reasons(scores, cfg.lenient)
            in_a, in_b = not strict, not lenient
            assert in_b or not in_a, f"{clip['id']}: in A but not in B (lenient fails {lenient})"
            rows.append({**clip, "scores": scores, "reasons": {"strict": strict, "lenient": lenient},
                         "in_A": in_a, "in_B": in_b})
    return rows
