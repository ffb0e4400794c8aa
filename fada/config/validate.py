"""Turn a plain dict (from YAML plus overrides) into typed dataclasses, collecting every problem.

torchtune-style: nothing stops at the first error; the caller gets one ConfigError listing all of them, each
naming its dotted key. Field metadata (see ``fada.config.model._f``) carries the limits:
``ge``/``gt``/``le``/``lt`` for numbers, ``path="file"|"dir"`` for paths that must exist when set.
A dataclass may define ``check(self) -> list[str]`` for rules that span fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from fada.errors import ConfigError

_MISSING = object()

_YAML11_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def from_dict(cls, data: Any, source: str | None = None):
    """Build ``cls`` (a dataclass) from ``data``; raise ConfigError with every problem found."""
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    if obj is not None:
        # Cross-field rules run even after type errors (failed fields kept their defaults); a key that already
        # has a problem is not reported twice.
        checked: list[str] = []
        _run_checks(obj, "", checked)
        reported = {p.split(":", 1)[0] for p in problems}
        problems += [p for p in checked if p.split(":", 1)[0] not in reported]
    if problems:
        raise ConfigError(problems, source)
    return obj


def to_dict(obj) -> Any:
    """Dataclass tree → plain dict/list/scalars (YAML-safe)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _build(cls, data, prefix: str, problems: list[str]):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{prefix or 'recipe'}: expected a mapping, got {type(data).__name__}")
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            problems.append(f"{_key(prefix, str(name))}: unknown key{suggest(str(name), fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = _key(prefix, name)
        if name in data:
            value = _coerce(hints[name], data[name], key, problems)
            if value is not _MISSING:
                _check_meta(f.metadata, value, key, problems)
                kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{key}: required key is missing")
    try:
        return cls(**kwargs)
    except TypeError:  # a required field was missing; already reported
        return None


def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(tp, value, key: str, problems: list[str]):
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, key, problems)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and value not in choices:
            # YAML 1.1 reads off/no/false (on/yes/true) as booleans: map them back to a string choice
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((c for c in choices if isinstance(c, str) and c.lower() in words), value)
        if value not in choices:
            hint = suggest(str(value), [str(c) for c in choices])
            problems.append(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
            return _MISSING
        return value
    if origin in (list, typing.List):
        (inner,) = get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {type(value).__name__} {value!r}")
            return _MISSING
        out = [_coerce(inner, v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return _MISSING if any(v is _MISSING for v in out) else out
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {type(value).__name__}")
            return _MISSING
        return dict(value)
    if dataclasses.is_dataclass(tp):
        obj = _build(tp, value, key, problems)
        return _MISSING if obj is None else obj
    if tp is Any:
        return value
    if value is None:
        problems.append(f"{key}: expected {_type_name(tp)}, got null")
        return _MISSING
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _YAML11_EXP_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; everyone means the number
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    problems.append(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return _MISSING


def _check_meta(meta, value, key: str, problems: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_meta(meta, v, f"{key}[{i}]", problems)
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for name, op, word in (("ge", float.__ge__, ">="), ("gt", float.__gt__, ">"),
                               ("le", float.__le__, "<="), ("lt", float.__lt__, "<")):
            if name in meta and not op(float(value), float(meta[name])):
                problems.append(f"{key}: {value} is out of range (must be {word} {meta[name]})")
    kind = meta.get("path")
    if kind and isinstance(value, str):
        p = os.path.expanduser(value)
        if kind == "dir" and not os.path.isdir(p):
            problems.append(f"{key}: folder not found: {value}")
        elif kind == "file" and not os.path.isfile(p):
            problems.append(f"{key}: file not found: {value}")


def _run_checks(obj, prefix: str, problems: list[str]) -> None:
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        _run_checks(getattr(obj, f.name), _key(prefix, f.name), problems)
    check = getattr(obj, "check", None)
    if callable(check):
        for msg in check():
            # ``check`` names keys relative to its own dataclass
            problems.append(_key(prefix, msg) if prefix else msg)
