"""Training data over a curated manifest (A.jsonl for the teacher, B.jsonl for distillation).

Each clip is turned once into latents (through the recipe's VAE) and per-frame audio features (through the recipe's
audio front end) and cached on disk as safetensors, read lazily in slices, so epochs cost no decoding and memory
does not grow with the corpus. An item is a window of F frames with its M motion frames (the frames before it, or
the reference repeated at a clip start), a reference frame from elsewhere in the same clip (anywhere outside the
window, or a few frames from it: ``data.reference_gap``), and the F per-frame audio windows. For nets that read
per-portrait conditions (``model.conditions``, Hallo's), each clip's conditions are computed once from its first
frame (a curated clip keeps its face in place) and cached with it; items then carry them
(``face_conditions.batch_portrait``). Items are indexed by ``(index, epoch)`` (see fada.training.sampler) and
draw their randomness from those numbers, so data order and content resume exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
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


CACHE_FORMAT = 2
"""Version of the per-clip cache files (2: unwindowed audio features, windows cut on reading)."""


def cache_models_key(vae, frontend, resolution: int, fps: int, conditions=None) -> str:
    """Hash of everything that decides a clip's cached tensors apart from the clip itself: the codec's and the
    audio front end's identity (config and weights fingerprint), resolution, fps, the file format and what computes
    the portrait conditions (``conditions.identity`` when there is one)."""
    extra = {} if conditions is None else {"conditions": getattr(conditions, "identity", repr(conditions))}
    ident = json.dumps({"format": CACHE_FORMAT, "codec": vae.identity(), "audio": frontend.identity(),
                        "resolution": int(resolution), "fps": int(fps), **extra}, sort_keys=True, default=str)
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


class ClipStore:
    """A disk-backed cache of curated clips: one safetensors file per clip with its latents (T, C, h, w) and its
    per-frame audio features (T, L, D), written once and read in slices.

    Files live in ``cache_dir/models-<key>/`` where the key hashes the codec and the audio model (see
    ``cache_models_key``): changing either re-encodes instead of silently reusing stale latents. Building is
    resumable (each file is written atomically) and sharded: with ``world`` processes, rank r encodes clips
    r, r+world, ... and ``barrier`` waits for the others before anyone reads. The store itself holds only the file
    list and frame counts, so a process's memory does not grow with the corpus.
    """

    def __init__(self, rows: list[dict], vae, frontend, resolution: int, fps: int, cache_dir: str | os.PathLike,
                 min_frames: int = 1, progress: bool = True, rank: int = 0, world: int = 1, barrier=None,
                 conditions=None):
        self.vae, self.frontend, self.conditions = vae, frontend, conditions
        self.resolution, self.fps = resolution, fps
        self.window = int(frontend.window)
        key = cache_models_key(vae, frontend, resolution, fps, conditions)
        self.cache_dir = Path(cache_dir) / f"models-{key}"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        models_file = self.cache_dir / "models.json"
        if rank == 0 and not models_file.is_file():
            from fada.utils.io import atomic_path

            with atomic_path(models_file) as tmp:  # says what made these files
                tmp.write_text(json.dumps({"codec": vae.identity(), "audio": frontend.identity(),
                                           "resolution": resolution, "fps": fps, "format": CACHE_FORMAT},
                                          indent=1, default=str))
        paths = [self.cache_dir / f"{self._key(row)}.safetensors" for row in rows]
        todo = [i for i in range(rank, len(rows), world) if not paths[i].is_file()]
        for i in tqdm(todo, desc="cache clips", disable=not progress or not todo, leave=False):
            self._build(rows[i], paths[i])
        if barrier is not None:
            barrier()
        self.rows, self.paths, self.lengths = [], [], []
        for row, path in zip(rows, paths):
            n = self._frames(path)
            if n >= min_frames:
                self.rows.append(row)
                self.paths.append(path)
                self.lengths.append(n)
        if not self.paths:
            raise FadaError(f"no clip has the {min_frames} frames a training item needs")
        self.has_conditions = conditions is not None
        self.vae = self.frontend = self.conditions = None  # the files are written: workers receive paths, not models
        with safe_open(str(self.paths[0]), "pt") as f:
            self.latent_shape = tuple(f.get_slice("latents").get_shape()[1:])

    def _key(self, row: dict) -> str:
        st = os.stat(row["video"])
        ident = json.dumps([row["video"], st.st_size, int(st.st_mtime), row["wav"]])
        return hashlib.sha1(ident.encode()).hexdigest()[:16]

    @staticmethod
    def _frames(path: Path) -> int:
        try:
            with safe_open(str(path), "pt") as f:
                n, na = f.get_slice("latents").get_shape()[0], f.get_slice("audio").get_shape()[0]
        except Exception as e:
            raise FadaError(f"{path}: unreadable cache file ({' '.join(str(e).split())[:200]}); delete it to "
                            "re-encode the clip") from None
        if n != na:
            raise FadaError(f"{path}: {n} latent frames but {na} audio frames; delete it to re-encode the clip")
        return int(n)

    def _build(self, row: dict, path: Path) -> None:
        from fada.data.media import read_audio, read_video
        from fada.models.vae import frames_to_tensor
        from fada.utils.io import atomic_path

        frames, fps_src = read_video(row["video"])
        frames = _resize_frames(frames[_resample_indices(len(frames), fps_src, self.fps)], self.resolution)
        audio = read_audio(row["wav"], self.frontend.sample_rate)
        with torch.no_grad():
            latents = torch.cat([self.vae.encode(frames_to_tensor(frames[i:i + 16], device=self.vae.device,
                                                                  dtype=self.vae.dtype)).float().cpu()
                                 for i in range(0, len(frames), 16)])
            feats = self.frontend.frame_features(np.asarray(audio, np.float32), len(frames), self.fps)
        item = {"latents": latents.contiguous(), "audio": feats.float().cpu().contiguous()}
        if self.conditions is not None:  # the clip's portrait conditions, from its first frame
            item.update({f"cond.{k}": v.float().contiguous() for k, v in self.conditions(frames[0]).tensors().items()})
        with atomic_path(path) as tmp:
            save_file(item, str(tmp))

    def __len__(self) -> int:
        return len(self.paths)

    def num_frames(self, index: int) -> int:
        return self.lengths[index]

    def latents(self, index: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Latents of frames [start, stop) of clip ``index`` (read from disk, nothing else loaded)."""
        with safe_open(str(self.paths[index]), "pt") as f:
            return f.get_slice("latents")[start:stop].clone()

    def conditions_tensors(self, index: int) -> dict[str, torch.Tensor]:
        """The clip's cached portrait conditions ({} without conditions): ``PortraitConditions.tensors()`` names."""
        if not self.has_conditions:
            return {}
        with safe_open(str(self.paths[index]), "pt") as f:
            return {k[len("cond."):]: f.get_tensor(k) for k in f.keys() if k.startswith("cond.")}

    def audio(self, index: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Windowed audio features (stop - start, 2w+1, L, D) of frames [start, stop): frame f holds the clip's
        frames f-w..f+w clamped to the clip, exactly as ``window_features`` of the whole clip would."""
        T, w = self.lengths[index], self.window
        stop = T if stop is None else stop
        lo, hi = max(0, start - w), min(T, stop + w)
        with safe_open(str(self.paths[index]), "pt") as f:
            part = f.get_slice("audio")[lo:hi].clone()
        idx = (torch.arange(start, stop)[:, None] + torch.arange(-w, w + 1)[None, :]).clamp_(0, T - 1) - lo
        return part[idx]


def reference_index(rng: np.random.Generator, T: int, start: int, F: int, gap=None) -> int:
    """The reference frame of the window [start, start + F) in a clip of T frames. gap None: any frame outside the
    window (as a portrait would be), or any frame when the window fills the clip. gap (lo, hi): d ~ U{lo..hi} frames
    before the window's first frame or after its last, whichever side exists (one at random when both do); any
    frame outside the window when neither does."""
    if gap is not None:
        d = int(rng.integers(gap[0], gap[1] + 1))
        sides = [i for i in (start - d, start + F - 1 + d) if 0 <= i < T]
        if sides:
            return sides[int(rng.integers(0, len(sides)))]
    outside = np.r_[0:start, start + F:T]
    return int(rng.choice(outside)) if len(outside) else int(rng.integers(0, T))


class ClipWindowDataset(torch.utils.data.Dataset):
    """Items of F frames + M motion frames + one reference frame + F audio windows from a ClipStore.
    ``reference_gap``: data.reference_gap (``reference_index``)."""

    def __init__(self, store: ClipStore, num_frames: int, motion_frames: int, seed: int, motion_scale=None,
                 reference_gap=None):
        self.store, self.F, self.M, self.seed = store, num_frames, motion_frames, seed
        self.motion_scale = None if motion_scale is None else torch.tensor([float(x) for x in motion_scale])
        self.reference_gap = None if reference_gap is None else (int(reference_gap[0]), int(reference_gap[1]))

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        T, F, M = self.store.num_frames(index), self.F, self.M
        start = int(rng.integers(0, T - F + 1))
        ref_i = reference_index(rng, T, start, F, self.reference_gap)
        ref = self.store.latents(index, ref_i, ref_i + 1)[0]
        if start >= M:
            motion = self.store.latents(index, start - M, start)
        else:  # a clip start: the reference stands in for the frames before
            motion = ref.unsqueeze(0).expand(M, *ref.shape).clone()
        item = {"x0": self.store.latents(index, start, start + F).permute(1, 0, 2, 3).contiguous(),  # (C, F, h, w)
                "ref": ref, "motion": motion, "audio": self.store.audio(index, start, start + F)}
        cond = self.store.conditions_tensors(index)
        if cond:
            item.update({f"cond.{k}": v for k, v in cond.items()})
            item["cond.motion_scale"] = self.motion_scale if self.motion_scale is not None else torch.ones(3)
        return item


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
