"""Atomic file output: write to a temporary file in the same folder, then rename over the target.

A crash mid-write leaves the old file (or nothing), never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel says it (Linux /proc), else by setting and
    restoring it under a lock (briefly 0o077: a file another thread creates meanwhile is too private, never too
    open)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def publish_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the mode a plain open() or mkdir() would have under
    the user's umask, before it is renamed into place as an output."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def publish_tree(root: str | os.PathLike) -> None:
    """`publish_mode` for a folder assembled under a temporary name and everything in it: besides ``tempfile``'s
    0700 folder, safetensors writes its files 0600 whatever the umask."""
    mask = current_umask()
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    The temporary name keeps the target's suffix (libraries such as PyAV pick the format from it).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix,
                               dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        publish_mode(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | os.PathLike, obj, indent: int = 2) -> None:
    write_text(target, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_jsonl(target: str | os.PathLike, rows) -> None:
    write_text(target, "".join(json.dumps(r) + "\n" for r in rows))


def read_pair_list(path, allowed: set[str], what: str = "list"):
    """Rows of a JSONL list of {portrait, audio, ...} objects (blank and # lines skipped), as (line, where, row);
    every problem is a one-line FadaError naming the file and line."""
    from fada.errors import FadaError

    path = Path(path)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FadaError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or "portrait" not in row or "audio" not in row:
            raise FadaError(f"{where}: each line of a {what} needs an object with 'portrait' and 'audio'")
        extra = set(row) - allowed
        if extra:
            raise FadaError(f"{where}: unknown key(s) {', '.join(sorted(extra))} "
                            f"(allowed: {', '.join(sorted(allowed))})")
        yield n, where, row
