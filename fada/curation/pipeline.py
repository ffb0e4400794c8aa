"""Per-video curation: decode, track the face, cut clips, write them, score them. One call per source video.

``process_video(job)`` is the (spawn-safe, top-level) worker. It never raises for a bad input file: an
unreadable, corrupt or audio-less file comes back as ``{"status": "skipped", "skipped": code, "detail": msg}``.

Memory stays bounded however long the video is: frames are decoded in chunks (``iter_video_chunks``) and
resampled to the recipe fps by nearest source frame. Pass 1 runs the face detector on every ``detect_every``-th
output frame; the face track is then split at gaps, smoothed and cut into clips. Pass 2 crops, writes and scores
each clip while streaming the frames again (or from memory when the whole resampled video fits
``KEEP_FRAMES_BYTES``). Clip scores need at most one clip of small analysis crops in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import traceback
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from fada.curation import scores as S
from fada.errors import FadaError

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
KEEP_FRAMES_BYTES = 256 * 2**20
"""Keep the resampled frames of pass 1 for pass 2 when they take at most this much memory; otherwise decode twice."""
DETECT_MAX_SIDE = 480
"""Frames are reduced so that their shorter side is at most this before face detection (boxes scaled back)."""
CACHE_VERSION = 1
PROCESS_KEYS = ("resolution", "fps", "sample_rate", "min_clip_seconds", "max_clip_seconds", "face_margin",
                "detect_every", "max_face_gap", "sync_search", "syncnet_weights", "crf")
"""CurateConfig fields that change what a video's clips and scores are (thresholds only change the selection)."""


# ------------------------------------------------------------------------------------------------ inputs


def find_videos(input_dir: Path) -> list[Path]:
    """Every video file under ``input_dir`` (recursively, by extension), sorted; hidden folders are ignored."""
    out = []
    for p in sorted(input_dir.rglob("*")):
        rel = p.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            out.append(p)
    return out


def clip_prefix(rel: str) -> str:
    """A file-name-safe, unique id prefix for a source video given by its path relative to the input folder."""
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.replace("/", "__")).strip("._") or "video"
    return safe


def process_params(cfg) -> dict:
    return {k: getattr(cfg, k) for k in PROCESS_KEYS}


def cache_key(path: Path, rel: str, params: dict) -> str:
    """Stable hash of the source file's path, size and mtime and of the processing parameters."""
    st = path.stat()
    blob = json.dumps({"rel": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "params": params,
                       "v": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def load_cached(cache_file: Path, out_dir: Path) -> Optional[dict]:
    """A finished video's result, if its cache file is valid and every clip it lists is still on disk."""
    try:
        res = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or "status" not in res:
        return None
    for clip in res.get("clips", []):
        if not (out_dir / clip["video"]).is_file() or not (out_dir / clip["wav"]).is_file():
            return None
    return res


# ------------------------------------------------------------------------------------------------ worker


_SYNCNET = {}


def _syncnet(path: str):
    if path not in _SYNCNET:
        import multiprocessing

        import torch

        from fada.metrics.syncnet import SyncNetScorer

        if multiprocessing.parent_process() is not None:  # a pool worker: one thread each, the pool is the parallelism
            torch.set_num_threads(1)
        _SYNCNET[path] = SyncNetScorer(path)
    return _SYNCNET[path]


def _skipped(job: dict, code: str, detail: str) -> dict:
    return {"source": job["rel"], "status": "skipped", "skipped": code, "detail": detail, "clips": []}


def process_video(job: dict) -> dict:
    """Worker entry point: curate one source video; write its cache file; return its result dict."""
    import cv2

    from fada.utils.io import write_json

    cv2.setNumThreads(1)
    try:
        res = _process(job)
    except FadaError as e:
        res = _skipped(job, "decode_error", str(e))
    except Exception as e:  # a bug or an exotic file: keep the run going and say what happened
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        res = _skipped(job, "error", f"{job['path']}: {type(e).__name__}: {e} ({tb})")
    if job.get("cache"):
        write_json(job["cache"], res)
    return res


def _target_frames(path: Path, src_fps: float, fps: float, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(output index k, frame) at ``fps``, picking the nearest source frame; frames are decoded in chunks."""
    from fada.data.media import iter_video_chunks

    k, src = 0, 0
    want = S.nearest_source_index(0, src_fps, fps)
    for block in iter_video_chunks(path, chunk):
        for frame in block:
            while want == src:
                yield k, frame
                k += 1
                want = S.nearest_source_index(k, src_fps, fps)
            src += 1


def _process(job: dict) -> dict:
    from fada.data.face import Box, FaceDetector, smooth_boxes
    from fada.data.media import read_audio_track, video_info

    path, rel, out = Path(job["path"]), job["rel"], Path(job["out"])
    p = job["params"]
    fps, sr, R, margin = int(p["fps"]), int(p["sample_rate"]), int(p["resolution"]), float(p["face_margin"])
    try:
        info = video_info(path)
    except FadaError as e:
        return _skipped(job, "unreadable", str(e))
    if not info.has_audio:
        return _skipped(job, "no_audio", f"{path}: no audio track")
    try:
        audio = read_audio_track(path, sr)
    except FadaError as e:
        return _skipped(job, "no_audio", str(e))
    base = {"source": rel, "video_info": info.to_dict(), "clips": []}

    # ---- pass 1: resample, detect every N-th frame
    frame_bytes = max(1, info.width * info.height * 3)
    chunk = int(max(1, min(64, (64 * 2**20) // frame_bytes)))
    est_frames = int(math.ceil(max(info.duration, info.frames / max(info.fps, 1e-6)) * fps)) + 2
    keep = est_frames * frame_bytes <= KEEP_FRAMES_BYTES
    kept: list[np.ndarray] = []
    every = int(p["detect_every"])
    detector = FaceDetector()
    det_idx: list[int] = []
    det_cands: list[list[list[float]]] = []
    n_frames = 0
    for k, frame in _target_frames(path, info.fps, fps, chunk):
        n_frames = k + 1
        if keep:
            kept.append(frame)
            if len(kept) * frame_bytes > KEEP_FRAMES_BYTES:  # longer than its header said: decode twice instead
                keep, kept = False, []
        if k % every == 0:
            det_idx.append(k)
            det_cands.append(_candidates(detector, frame))
    if n_frames == 0:
        return _skipped(job, "decode_error", f"{path}: no frames decoded")
    base["frames_resampled"] = n_frames
    max_gap = int(round(float(p["max_face_gap"]) * fps))
    det_boxes = S.choose_track(det_cands, max_skip=max(0, max_gap // every))
    min_len = int(math.ceil(float(p["min_clip_seconds"]) * fps - 1e-9))
    max_len = int(math.floor(float(p["max_clip_seconds"]) * fps + 1e-9))
    base["face_detection_rate"] = sum(b is not None for b in det_boxes) / max(1, len(det_idx))
    if n_frames < min_len:
        return {**base, "status": "too_short", "detail": f"{n_frames / fps:.2f} s < min_clip_seconds"}
    segments = S.face_segments(det_idx, det_boxes, n_frames, every, max_gap)

    # ---- smoothed per-frame boxes per segment, clips per segment
    clips = []  # (start, end, per-frame boxes (end-start, 4), raw detections in clip)
    det_arr = np.asarray(det_idx)
    for s0, s1 in segments:
        pieces = S.slice_segment(s0, s1, min_len, max_len)
        if not pieces:
            continue
        sel = np.flatnonzero((det_arr >= s0) & (det_arr < s1))
        seg_boxes = [Box(*det_boxes[i]) if det_boxes[i] is not None else None for i in sel]
        smoothed, _ = smooth_boxes(seg_boxes, window=5)
        frames_idx = np.arange(s0, s1)
        per_frame = np.stack([np.interp(frames_idx, det_arr[sel], smoothed[:, j]) for j in range(4)], axis=1)
        for c0, c1 in pieces:
            in_clip = [i for i in sel if c0 <= det_idx[i] < c1]
            clips.append((c0, c1, per_frame[c0 - s0:c1 - s0], in_clip))
    if not clips:
        return {**base, "status": "no_face", "detail": "no face track of at least min_clip_seconds"}

    # ---- pass 2: crop, write, score
    source = kept if keep else None
    stream = enumerate(source) if keep else _target_frames(path, info.fps, fps, chunk)
    prefix = clip_prefix(rel)
    syncnet = p.get("syncnet_weights")
    ana = 224 if syncnet else min(R, 128)
    rows = []
    ci = 0
    state = None
    try:
        for k, frame in stream:
            if ci >= len(clips):
                break
            c0, c1, boxes, in_clip = clips[ci]
            if k < c0:
                continue
            if state is None:
                state = _ClipState(out, f"{prefix}-{ci:03d}", c0, c1, fps, R, sr, audio, int(p["crf"]))
            state.add(frame, boxes[k - c0], margin, ana)
            if k == c1 - 1:
                st, state = state, None
                rows.append(st.finish(rel, boxes, in_clip, det_idx, det_boxes, margin, p, syncnet))
                ci += 1
    finally:
        if state is not None:  # an error, or the stream ended early (fewer frames than pass 1 saw)
            state.abort()
    if not rows:
        return _skipped(job, "decode_error", f"{path}: frames ended early on the second read")
    return {**base, "status": "ok", "clips": rows}


def _candidates(detector, frame: np.ndarray) -> list[list[float]]:
    """Every face candidate (x, y, w, h in source pixels), largest first, found on a copy of the frame no larger
    than DETECT_MAX_SIDE, so that ``scores.choose_track`` can follow one face past a larger false hit."""
    import cv2

    h, w = frame.shape[:2]
    s = min(1.0, DETECT_MAX_SIDE / min(h, w))
    img = frame if s >= 1.0 else cv2.resize(frame, (max(1, int(round(w * s))), max(1, int(round(h * s)))),
                                            interpolation=cv2.INTER_AREA)
    return [[b.x / s, b.y / s, b.w / s, b.h / s] for b in detector.detect_all(img)]


class _ClipState:
    """One clip being written (streamed) and measured."""

    def __init__(self, out: Path, cid: str, c0: int, c1: int, fps: int, R: int, sr: int, audio: np.ndarray,
                 crf: int):
        from fada.data.media import VideoWriter

        self.out, self.cid, self.c0, self.c1, self.fps, self.R, self.sr = out, cid, c0, c1, fps, R, sr
        a0, a1 = int(round(c0 / fps * sr)), int(round(c1 / fps * sr))
        clip_audio = audio[a0:a1]
        if clip_audio.size < a1 - a0:
            clip_audio = np.pad(clip_audio, (0, a1 - a0 - clip_audio.size))
        self.audio = clip_audio.astype(np.float32)
        self.video_rel = f"clips/{cid}.mp4"
        self.wav_rel = f"clips/{cid}.wav"
        self.writer = VideoWriter(out / self.video_rel, fps, (R, R), audio=self.audio, sample_rate=sr, crf=crf,
                                  preset="veryfast", threads=1)
        self.writer.open()
        self.crops: list[np.ndarray] = []
        self.sharp: list[float] = []
        self.bright: list[float] = []
        self.bg: list[float] = []
        self.prev = None
        self.prev_mask = None

    def add(self, frame: np.ndarray, box: np.ndarray, margin: float, ana: int) -> None:
        import cv2

        from fada.data.face import crop_square

        crop = crop_square(frame, box, margin, self.R)
        self.writer.write(crop)
        self.crops.append(crop if ana == self.R else cv2.resize(crop, (ana, ana), interpolation=cv2.INTER_AREA))
        patch = S.face_patch(frame, box)
        self.sharp.append(S.sharpness(patch))
        self.bright.append(S.brightness(patch))
        small, scale = S.bg_frame(frame)
        mask = S.person_mask(small.shape, box, S.BG_MARGIN, scale)
        if self.prev is not None:
            m = S.background_motion(self.prev, small, mask & self.prev_mask)
            if m is not None:
                self.bg.append(m)
        self.prev, self.prev_mask = small, mask

    def abort(self) -> None:
        self.writer.abort()

    def finish(self, rel: str, boxes: np.ndarray, in_clip: list, det_idx: list, det_boxes: list, margin: float,
               p: dict, syncnet: Optional[str]) -> dict:
        from fada.data.media import write_wav

        self.writer.close()
        write_wav(self.out / self.wav_rel, self.audio, self.sr)
        crops = np.stack(self.crops)
        wf = S.weight_free_sync(crops, self.audio, self.sr, self.fps, margin, int(p["sync_search"]))
        if syncnet:
            res = _syncnet(syncnet).score(crops, self.audio, self.sr, self.fps)
            sync = {"offset": int(res["offset"]), "confidence": float(res["sync_c"]), "method": "syncnet"}
        else:
            sync = wf
        found = [i for i in in_clip if det_boxes[i] is not None]
        raw = np.asarray([det_boxes[i] for i in found]).reshape(-1, 4)
        sizes = boxes[:, 2:].max(axis=1)
        n = self.c1 - self.c0
        return {
            "id": self.cid,
            "source_video": rel,
            "video": self.video_rel,
            "wav": self.wav_rel,
            "start": self.c0 / self.fps,
            "end": self.c1 / self.fps,
            "frames": n,
            "fps": self.fps,
            "face": {
                "size_median": float(np.median(sizes)), "size_min": float(sizes.min()),
                "size_max": float(sizes.max()),
                "detection_rate": len(found) / max(1, len(in_clip)),
                "box_mean": [float(v) for v in boxes.mean(axis=0)],
            },
            "scores": {
                "sharpness": float(np.median(self.sharp)),
                "brightness": float(np.mean(self.bright)),
                "face_size": float(np.median(sizes)),
                "sync_offset": int(sync["offset"]),
                "sync_confidence": float(sync["confidence"]),
                "sync_method": sync["method"],
                "background_motion": float(np.mean(self.bg)) if self.bg else None,
                "head_motion": S.head_motion([det_idx[i] for i in found], raw),
                "mouth_motion": float(wf["mouth_motion"]),
            },
        }
