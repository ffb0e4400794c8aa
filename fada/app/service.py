"""What `fada app`'s page does, without the page: find the model folders and load each once, check the uploads,
make the videos. Everything here raises ``FadaError`` with a one-line message the page shows as it is.

Uploads arrive as files in a folder the app owns (``Workspace``): a path that does not lie inside it is refused,
so no path a user types is ever opened. The videos are written there too, and the folder is removed when the app
stops.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from fada.errors import FadaError

MODES = ("teacher", "balanced", "fast")
MAX_AUDIO_SECONDS = 60.0
PREVIEW_SIZE = 256
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp")


# ---- where the files live -------------------------------------------------------------------------------------

class Workspace:
    """The app's own temporary folder: ``uploads/`` (Gradio's upload cache, GRADIO_TEMP_DIR) and ``videos/``."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fada-app-"))
        self.uploads = self.root / "uploads"
        self.videos = self.root / "videos"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.videos.mkdir(parents=True, exist_ok=True)
        self._n = 0
        self._lock = threading.Lock()

    def upload(self, path, what: str) -> Path:
        """An uploaded file's path, checked to lie inside this workspace (never a path a user typed)."""
        if not path:
            raise FadaError(f"no {what}: upload one")
        p = Path(path).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise FadaError(f"the {what} must be uploaded through the page")
        if not p.is_file():
            raise FadaError(f"the uploaded {what} is gone; upload it again")
        return p

    def new_video(self, stem: str) -> Path:
        with self._lock:
            self._n += 1
            return self.videos / f"{self._n:04d}_{stem}.mp4"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---- models ---------------------------------------------------------------------------------------------------

@dataclass
class ModelEntry:
    label: str          # what the picker shows: "<folder> (<kind>)"
    path: Path
    source: str         # --model, $FADA_MODEL, the last demo


def find_models(explicit: list) -> list[ModelEntry]:
    """The ``--model`` folders, then ``$FADA_MODEL``, then the last ``fada demo`` run's models (its teacher,
    balanced and fast folders); duplicates dropped. Folders are checked when they are loaded."""
    from fada.utils.cache import last_demo_model

    found: list[tuple[Path, str]] = [(Path(m).expanduser(), "--model") for m in explicit]
    if os.environ.get("FADA_MODEL"):
        found.append((Path(os.environ["FADA_MODEL"]).expanduser(), "$FADA_MODEL"))
    demo = last_demo_model()
    if demo is not None and demo.parent.is_dir():
        found += [(d, "the last `fada demo`") for d in sorted(demo.parent.iterdir())
                  if (d / "fada_model.json").is_file()]
    out, seen = [], set()
    for path, source in found:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        out.append(ModelEntry(_label(path), path, source))
    return out


def _label(path: Path) -> str:
    try:
        from fada.export import read_spec

        return f"{path.name} ({read_spec(path).kind})"
    except Exception:  # shown as it is; loading it gives the reason
        return path.name


class ModelRegistry:
    """Each model folder loaded once, on first use, and shared by every request (loads are serialised)."""

    def __init__(self, entries: list[ModelEntry], device=None, compile: bool = False):
        self.entries = {e.label: e for e in entries}
        self.device = device
        self.compile = bool(compile)  # compile each model's graphs when it loads (a warm-up clip builds them)
        self._pipes: dict = {}
        self._lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self.entries)

    def get(self, label: str):
        from fada.pipeline import FadaPipeline

        if label not in self.entries:
            raise FadaError("no model chosen: pick one (start the app with --model DIR)")
        with self._lock:
            if label not in self._pipes:
                entry = self.entries[label]
                try:
                    pipe = FadaPipeline.from_pretrained(entry.path, device=self.device)
                    if self.compile:  # shapes do not depend on the picture: a grey one builds the graphs
                        res = pipe.resolution
                        pipe.compile().warm_up(np.full((res, res, 3), 128, np.uint8), crop=False)
                    self._pipes[label] = pipe
                except FadaError as e:
                    raise FadaError(f"model {entry.path} does not load: {first_line(e)}") from None
            return self._pipes[label]

    def modes(self, label: str) -> list[tuple[str, int]]:
        """(mode, NFE per clip at the model's defaults) for every mode the model runs."""
        pipe = self.get(label)
        return [(m, pipe.plan(m).nfe_per_clip) for m in MODES if m in pipe.spec.modes]

    def for_mode(self, mode: str) -> Optional[str]:
        """The first model that runs ``mode`` (loading those it must look at), or None."""
        for label in self.labels:
            try:
                if mode in self.get(label).spec.modes:
                    return label
            except FadaError:
                continue
        return None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---- inputs ---------------------------------------------------------------------------------------------------

def read_image(path: Path) -> np.ndarray:
    from fada.data.portrait import read_portrait

    if path.suffix.lower() not in IMAGE_TYPES:
        raise FadaError(f"portrait: {path.suffix or 'no extension'} is not an image type the page takes "
                        f"({', '.join(IMAGE_TYPES)})")
    return read_portrait(path)


def face_preview(image: np.ndarray, crop: bool, size: int = PREVIEW_SIZE) -> np.ndarray:
    """The square the model will see (the detected face with curation's margin, or the central square)."""
    from fada.data.portrait import prepare_portrait

    try:
        return prepare_portrait(image, size, crop=crop, source="portrait")
    except FadaError as e:
        if "no face" in str(e):
            raise FadaError("no face found in the portrait: tick 'no crop' to use the central square as it is, "
                            "or upload a portrait with a clear frontal face") from None
        raise


def read_speech(path: Path, sample_rate: int, max_seconds: float) -> np.ndarray:
    from fada.models.audio import load_audio

    try:
        wav = load_audio(path, sample_rate)
    except FadaError as e:
        raise FadaError(f"audio: {first_line(e).replace(str(path), 'the uploaded file')}") from None
    seconds = len(wav) / sample_rate
    if seconds > max_seconds:
        raise FadaError(f"audio: {seconds:.1f} s is longer than this app's limit of {max_seconds:g} s "
                        "(start it with --max-audio-seconds to change it)")
    if not np.any(np.abs(wav) > 1e-4):
        raise FadaError("audio: the recording is silent")
    return wav


# ---- one request ----------------------------------------------------------------------------------------------

@dataclass
class Rendered:
    video: Path
    mode: str
    seconds: float
    nfe_per_clip: int
    clips: int
    video_seconds: float
    describe: str

    @property
    def seconds_per_video_second(self) -> float:
        return self.seconds / self.video_seconds if self.video_seconds else float("nan")

    def summary(self) -> str:
        return (f"{self.mode}: {self.seconds:.1f} s for {self.video_seconds:.1f} s of video "
                f"({self.seconds_per_video_second:.2f} s per video second), NFE {self.nfe_per_clip} per clip x "
                f"{self.clips} clips")


@dataclass
class Request:
    portrait: Path
    audio: Path
    crop: bool = True
    mode: Optional[str] = None
    steps: Optional[int] = None
    cfg_audio: Optional[float] = None
    cfg_ref: Optional[float] = None
    seed: int = 0


def render(pipe, req: Request, workspace: Workspace, max_seconds: float = MAX_AUDIO_SECONDS,
           on_step: Optional[Callable[[int, int], None]] = None) -> Rendered:
    """One mp4 (audio muxed in) into the workspace."""
    image = read_image(req.portrait)
    face_preview(image, req.crop)  # the page's wording for a missing face, before any sampling
    wav = read_speech(req.audio, pipe.frontend.sample_rate, max_seconds)
    t0 = time.perf_counter()
    out = workspace.new_video(req.mode or pipe.spec.kind)
    res = pipe(image, (wav, pipe.frontend.sample_rate), mode=req.mode, steps=req.steps, cfg_audio=req.cfg_audio,
               cfg_ref=req.cfg_ref, seed=int(req.seed), out=out, crop=req.crop, progress=False, on_step=on_step)
    return Rendered(out, res.plan.mode, time.perf_counter() - t0, res.nfe_per_clip, res.clips, res.audio_seconds,
                    res.plan.describe())
