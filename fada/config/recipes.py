"""Recipe lookup, loading, ``key.sub=value`` overrides and writing the resolved recipe.

``--recipe NAME`` resolves to the shipped ``recipes/NAME.yaml`` (packaged as ``fada.recipes``, so it also works
for a non-editable install); anything else is a path. Values of overrides are parsed as YAML scalars/lists
(``train.max_steps=10``, ``model.unet.block_out_channels=[32,64]``, ``vae.path=null``).
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path
from typing import Any

import yaml

from fada.config.schema import RECIPE_TYPES
from fada.config.validate import from_dict, suggest, to_dict
from fada.errors import ConfigError, FadaError
from fada.utils.io import write_text

RESOLVED_NAME = "recipe.yaml"


def _shipped_dir():
    try:  # installed wheel: recipes/ is packaged as fada.recipes
        return importlib.resources.files("fada.recipes")
    except ModuleNotFoundError:  # source checkout or editable install: the top-level recipes/ folder
        return Path(__file__).resolve().parents[2] / "recipes"


def shipped_recipes() -> dict[str, str]:
    """Shipped recipe name → its ``stage`` (teacher/distill/curate)."""
    out = {}
    for entry in sorted(_shipped_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
            out[entry.name[: -len(".yaml")]] = str(data.get("stage", "?"))
    return out


def recipe_summary(text: str) -> str:
    """The first sentence of a recipe's leading comment block (what the recipe is for), on one line; "" without one.
    A comment rather than a key: the description stays beside the settings it explains and needs no schema."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    block = " ".join(part for part in lines if part)
    return re.split(r"(?<=\.)\s+(?!\d)", block, maxsplit=1)[0]  # a sentence ends at ". ", not inside "Eq. 10"


def shipped_recipe_summaries() -> dict[str, str]:
    """Shipped recipe name → ``recipe_summary`` of its file."""
    return {entry.name[: -len(".yaml")]: recipe_summary(entry.read_text(encoding="utf-8"))
            for entry in sorted(_shipped_dir().iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")}


def resolve_recipe(name_or_path: str) -> tuple[str, str]:
    """Return (text, source label) of a recipe given by shipped name or by path."""
    p = Path(os.path.expanduser(name_or_path))
    if p.is_file():
        return p.read_text(encoding="utf-8"), str(p)
    stem = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    entry = _shipped_dir() / f"{stem}.yaml"
    if "/" not in stem and entry.is_file():
        return entry.read_text(encoding="utf-8"), f"recipes/{stem}.yaml"
    names = list(shipped_recipes())
    raise FadaError(f"recipe '{name_or_path}' not found: no such file and no shipped recipe of that name"
                    f"{suggest(stem, names)}; shipped: {', '.join(names)}")


def parse_overrides(overrides: list[str] | None) -> list[tuple[list[str], Any]]:
    parsed, problems = [], []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"{item}: an override must look like key.sub=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.split("."), value))
    if problems:
        raise ConfigError(problems, "overrides")
    return parsed


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    problems = []
    for path, value in parse_overrides(overrides):
        node = data
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                problems.append(f"{'.'.join(path[:i + 1])}: is a value, not a section (override {'.'.join(path)})")
                break
            node = nxt
        else:
            node[path[-1]] = value
    if problems:
        raise ConfigError(problems, "overrides")
    return data


def load_recipe(name_or_path: str, overrides: list[str] | None = None, stage: str | None = None):
    """Load, override and validate a recipe; ``stage`` (if given) is the command's expected stage."""
    text, source = resolve_recipe(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FadaError(f"{source}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FadaError(f"{source}: a recipe must be a mapping of sections")
    data = apply_overrides(data, overrides)
    kind = data.get("stage", stage)
    if kind not in RECIPE_TYPES:
        raise ConfigError([f"stage: {kind!r} is not one of {', '.join(RECIPE_TYPES)}"], source)
    if stage is not None and kind != stage:
        raise FadaError(f"{source} is a '{kind}' recipe; this command needs a '{stage}' recipe")
    data.setdefault("stage", kind)
    try:
        return from_dict(RECIPE_TYPES[kind], data, source)
    except ConfigError as e:
        raise ConfigError([_blame_override(p, overrides) for p in e.problems], source) from None


def _blame_override(problem: str, overrides: list[str] | None) -> str:
    """Point a problem at the override that caused it, e.g. ``bogus: unknown key (from override bogus.key=1)``."""
    key = problem.split(":", 1)[0]
    for item in overrides or []:
        okey = item.partition("=")[0]
        if okey == key or okey.startswith(key + "."):
            return f"{problem} (from override {item})"
    return problem


# What a stage reads from an earlier stage, and what to give when it is not set; the examples are `fada demo`'s
# layout (fada-demo/curated/{A,B}.jsonl from curate, runs/teacher from training, models/teacher from export).
_INPUT_HINTS = {
    ("teacher", "data.manifest"): "FILE (the A.jsonl, strict set A, that `fada curate` writes; "
                                  "e.g. fada-demo/curated/A.jsonl)",
    ("distill", "data.manifest"): "FILE (the B.jsonl, lenient set B, that `fada curate` writes; "
                                  "e.g. fada-demo/curated/B.jsonl)",
    ("distill", "distill.teacher"): "DIR (an exported model folder or a teacher run's output_dir, "
                                    "e.g. fada-demo/models/teacher or fada-demo/runs/teacher)",
}


def missing_inputs(recipe, keys=None) -> list[str]:
    """One problem per earlier stage's output that the recipe needs and does not name (only ``keys``, if given),
    each saying which override to set."""
    problems = []
    for (stage, key), hint in _INPUT_HINTS.items():
        if stage != getattr(recipe, "stage", None) or (keys is not None and key not in keys):
            continue
        section, name = key.split(".")
        if not getattr(getattr(recipe, section), name):
            problems.append(f"{key}: not set — give {key}={hint}")
    return problems


def require_inputs(recipe, keys=None) -> None:
    """Raise a ConfigError listing every ``missing_inputs`` problem at once."""
    problems = missing_inputs(recipe, keys)
    if problems:
        raise ConfigError(problems)


def recipe_to_yaml(recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


def save_resolved(recipe, out_dir: str | os.PathLike) -> Path:
    """Write the fully resolved recipe next to a stage's outputs (atomically)."""
    target = Path(out_dir) / RESOLVED_NAME
    write_text(target, recipe_to_yaml(recipe))
    return target
