"""Training data over a curated manifest (A.jsonl for the teacher, B.jsonl for distillation).

Each clip is turned once into latents (through the recipe's VAE) and per-frame audio features (through the
recipe's audio front end) and cached as safetensors, so epochs cost no decoding. An item is a window of F frames
with its M motion frames (the frames before it, or the reference repeated at a clip start), a reference frame
from elsewhere in the same clip, and the F per-frame audio windows. Items are indexed by ``(index, epoch)``
(see fada.training.sampler) and draw their randomness from those numbers, so data order and content resume
exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fada.errors import FadaError, MissingFileError


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a curate manifest that have a clip (video + wav); paths made absolute."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "manifest", "run `fada curate` first, or set data.manifest")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise FadaError(f"{path}:{n}: not valid JSON") from None
        if not row.get("video") or not row.get("wav"):
            continue
        row = dict(row)
        row["video"] = str((path.parent / row["video"]).resolve())
        row["wav"] = str((path.parent / row["wav"]).resolve())
        rows.append(row)
    if not rows:
        raise FadaError(f"{path}: the manifest lists no clips")
    return rows


def _resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])


def _resample_indices(n_src: int, fps_src: float, fps: float) -> np.ndarray:
    n = int(np.floor(n_src * fps / fps_src + 1e-6))
    return np.minimum(np.round(np.arange(n) * fps_src / fps).astype(int), n_src - 1)


class ClipStore:
    """Latents (T, C, h, w) and audio features (T, 2w+1, L, D) per clip, computed once and cached."""

    def __init__(self, rows: list[dict], vae, frontend, resolution: int, fps: int, cache_dir: str | os.PathLike,
                 min_frames: int = 1, progress: bool = True):
        self.rows, self.vae, self.frontend = rows, vae, frontend
        self.resolution, self.fps = resolution, fps
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.items: list[dict[str, torch.Tensor]] = []
        kept = []
        for row in tqdm(rows, desc="cache clips", disable=not progress, leave=False):
            item = self._load_or_build(row)
            if item["latents"].shape[0] >= min_frames:
                self.items.append(item)
                kept.append(row)
        if not self.items:
            raise FadaError(f"no clip has the {min_frames} frames a training item needs")
        self.rows = kept

    def _key(self, row: dict) -> str:
        st = os.stat(row["video"])
        ident = json.dumps([row["video"], st.st_size, int(st.st_mtime), row["wav"], self.vae.name,
                            self.frontend.name, self.resolution, self.fps])
        return hashlib.sha1(ident.encode()).hexdigest()[:16]

    def _load_or_build(self, row: dict) -> dict[str, torch.Tensor]:
        path = self.cache_dir / f"{self._key(row)}.safetensors"
        if path.is_file():
            return load_file(str(path))
        from fada.data.media import read_audio, read_video
        from fada.models.vae import frames_to_tensor

        frames, fps_src = read_video(row["video"])
        frames = _resize_frames(frames[_resample_indices(len(frames), fps_src, self.fps)], self.resolution)
        audio = read_audio(row["wav"], self.frontend.sample_rate)
        with torch.no_grad():
            latents = torch.cat([self.vae.encode(frames_to_tensor(frames[i:i + 16], device=self.vae.device))
                                 for i in range(0, len(frames), 16)]).float().cpu()
            feats = self.frontend.features(audio, len(frames), self.fps).float().cpu()
        item = {"latents": latents.contiguous(), "audio": feats.contiguous()}
        from fada.utils.io import atomic_path

        with atomic_path(path) as tmp:
            save_file(item, str(tmp))
        return item

    def __len__(self) -> int:
        return len(self.items)


class ClipWindowDataset(torch.utils.data.Dataset):
    """Items of F frames + M motion frames + one reference frame + F audio windows from a ClipStore."""

    def __init__(self, store: ClipStore, num_frames: int, motion_frames: int, seed: int):
        self.store, self.F, self.M, self.seed = store, num_frames, motion_frames, seed

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        item = self.store.items[index]
        lat, aud = item["latents"], item["audio"]
        T, F, M = lat.shape[0], self.F, self.M
        start = int(rng.integers(0, T - F + 1))
        # the reference comes from outside the window when the clip allows it (as a portrait would)
        outside = np.r_[0:start, start + F:T]
        ref_i = int(rng.choice(outside)) if len(outside) else int(rng.integers(0, T))
        ref = lat[ref_i]
        if start >= M:
            motion = lat[start - M:start]
        else:  # a clip start: the reference stands in for the frames before
            motion = ref.unsqueeze(0).expand(M, *ref.shape)
        return {"x0": lat[start:start + F].permute(1, 0, 2, 3).contiguous(),  # (C, F, h, w)
                "ref": ref.clone(), "motion": motion.clone(), "audio": aud[start:start + F].clone()}


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
