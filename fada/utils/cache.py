"""The user's cache folder: ``$XDG_CACHE_HOME/fada`` (default ``~/.cache/fada``).

It remembers one thing: the Fast model folder of the last ``fada demo`` run, which ``fada generate`` falls back to
when neither ``--model`` nor ``$FADA_MODEL`` names a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from fada.utils.io import write_json

LAST_DEMO = "last_demo.json"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fada"


def record_demo_model(path) -> Path:
    """Remember ``path`` (a model folder) as the last demo's Fast model; returns the record file."""
    target = cache_dir() / LAST_DEMO
    write_json(target, {"model": str(Path(path).expanduser().resolve())})
    return target


def last_demo_model() -> Optional[Path]:
    """The model folder recorded by the last ``fada demo`` run, or None (no record, unreadable record)."""
    f = cache_dir() / LAST_DEMO
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return Path(model) if isinstance(model, str) and model else None
