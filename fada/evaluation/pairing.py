"""Pair generated and reference videos by file name (stem): ``clip_007.mp4`` <-> ``clip_007.mov``.

Generated videos without a reference of the same name are *unpaired*: the no-reference metrics (sync, IQA) still
run on them, the distribution metrics (FID, FVD, E-FID) use the pairs only, so both sets hold the same clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fada.errors import FadaError, MissingFileError

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class Pair:
    name: str
    generated: Path
    reference: Optional[Path] = None

    @property
    def paired(self) -> bool:
        return self.reference is not None


@dataclass
class Pairing:
    items: list[Pair]                                   # every generated video, sorted by name
    unpaired_reference: list[Path] = field(default_factory=list)
    reference_given: bool = False                       # a reference folder / testset references were given

    @property
    def pairs(self) -> list[Pair]:
        return [p for p in self.items if p.paired]

    @property
    def unpaired_generated(self) -> list[Pair]:
        return [p for p in self.items if not p.paired]

    def summary(self) -> dict:
        return {"generated": len(self.items), "paired": len(self.pairs),
                "unpaired_generated": [p.name for p in self.unpaired_generated],
                "unpaired_reference": [q.stem for q in self.unpaired_reference]}


def list_videos(folder, what: str = "video folder") -> dict[str, Path]:
    """name (stem) -> path of every video directly in ``folder``; two files with one stem are an error."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise MissingFileError(folder, what)
    if not folder.is_dir():
        raise FadaError(f"{folder}: is a file, expected a {what}")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS and not p.name.startswith("."):
            if p.stem in out:
                raise FadaError(f"{folder}: two videos named {p.stem!r} ({out[p.stem].name}, {p.name}); "
                                f"videos are paired by name")
            out[p.stem] = p
    return out


def pair_folders(generated, reference=None) -> Pairing:
    """Pair the videos of two folders by name; ``reference`` None leaves every generated video unpaired."""
    gen = list_videos(generated, "--generated folder")
    if not gen:
        raise FadaError(f"{generated}: no videos ({', '.join(VIDEO_EXTS)}) in the --generated folder")
    ref = list_videos(reference, "--reference folder") if reference is not None else {}
    items = [Pair(name, path, ref.get(name)) for name, path in gen.items()]
    return Pairing(items, [p for n, p in ref.items() if n not in gen], reference is not None)


def pair_paths(rows) -> Pairing:
    """Pairing from (name, generated path, reference path or None) rows (the --model mode)."""
    items = sorted((Pair(n, Path(g), Path(r) if r is not None else None) for n, g, r in rows), key=lambda p: p.name)
    return Pairing(items, [], any(p.reference is not None for p in items))
