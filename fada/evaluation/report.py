"""The evaluation report: a table on the terminal, JSON (everything) and CSV (one row per video + an aggregate row,
or one row per swept value), all written atomically.

JSON layout (``fada eval``)::

    {"fada_version", "settings": {...}, "metrics": {name: value}, "skipped": {metric: one-line reason},
     "notes": [...], "protocols": {metric: the published protocol it follows (FVD-R, FVD-I)},
     "counts": {generated, paired, unpaired_generated, unpaired_reference, failed},
     "videos": [{name, generated, reference, frames, fps, seconds, face, <per-video metrics>, errors?}]}

A sweep's JSON holds ``"sweep": {"param", "values"}`` and ``"entries": [{param: value, <the layout above minus
settings>}]``.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Optional

from fada.evaluation.metrics import direction
from fada.utils.io import write_json, write_text

ROW_INFO = ("name", "generated", "reference", "frames", "fps", "seconds", "face")
TABLE_HIDE = ("gen_seconds", "video_seconds")  # in the CSV / JSON, not in the terminal table
AGGREGATE_NAME = "(aggregate)"
MAX_TABLE_ROWS = 50


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.1f}"
    return str(v)


def arrow(name: str) -> str:
    d = direction(name)
    return {"lower": "↓", "higher": "↑"}.get(d, "")


def metric_columns(report: dict) -> list[str]:
    """Per-video metric keys in first-seen order (info columns and errors excluded)."""
    cols: list[str] = []
    for r in report.get("videos", []):
        for k in r:
            if k not in ROW_INFO and k != "errors" and k not in cols:
                cols.append(k)
    return cols


def _console():
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, width=None if tty else 160, highlight=False, soft_wrap=False)


def print_report(report: dict, console=None) -> None:
    from rich.table import Table

    con = console or _console()
    rows = report.get("videos", [])
    cols = [c for c in metric_columns(report) if c not in TABLE_HIDE]
    if rows:
        t = Table(title="Per video (generated)", title_justify="left")
        t.add_column("name")
        t.add_column("ref")
        for c in cols:
            t.add_column(f"{c} {arrow(c)}".strip(), justify="right")
        t.add_column("errors")
        for r in rows[:MAX_TABLE_ROWS]:
            errs = "; ".join(f"{k}: {v}" for k, v in r.get("errors", {}).items())
            t.add_row(r["name"], "yes" if r.get("reference") else "no", *(fmt(r.get(c)) for c in cols), errs)
        con.print(t)
        if len(rows) > MAX_TABLE_ROWS:
            con.print(f"... {len(rows) - MAX_TABLE_ROWS} more videos in the CSV / JSON report")
    t = Table(title="Aggregate", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("better")
    for k, v in report.get("metrics", {}).items():
        t.add_row(k, fmt(v), {"lower": "lower", "higher": "higher"}.get(direction(k), ""))
    for k, why in report.get("skipped", {}).items():
        t.add_row(k, "skipped", why)
    con.print(t)
    counts = report.get("counts", {})
    if counts:
        line = f"{counts.get('generated', 0)} generated video(s), {counts.get('paired', 0)} paired by name"
        if counts.get("unpaired_generated"):
            line += f"; unpaired generated: {', '.join(counts['unpaired_generated'])}"
        if counts.get("unpaired_reference"):
            line += f"; references without a generated video: {', '.join(counts['unpaired_reference'])}"
        if counts.get("failed"):
            line += f"; failed: {', '.join(counts['failed'])}"
        con.print(line)
    for note in report.get("notes", []):
        con.print(f"note: {note}")
    for m, text in report.get("protocols", {}).items():
        con.print(f"protocol {m}: {text}")


def print_sweep(report: dict, console=None) -> None:
    from rich.table import Table

    con = console or _console()
    param = report["sweep"]["param"]
    keys = sweep_keys(report)
    t = Table(title=f"Sweep over {param}", title_justify="left")
    t.add_column(param, justify="right")
    for k in keys:
        t.add_column(f"{k} {arrow(k)}".strip(), justify="right")
    for e in report["entries"]:
        t.add_row(fmt(e[param]), *(fmt(e["metrics"].get(k)) for k in keys))
    con.print(t)
    skipped: dict[str, str] = {}
    for e in report["entries"]:
        for k, v in e.get("skipped", {}).items():
            skipped.setdefault(k, v)
    for k, v in skipped.items():
        con.print(f"skipped {k}: {v}")
    for note in report.get("notes", []):
        con.print(f"note: {note}")
    protocols: dict[str, str] = {}
    for e in report["entries"]:
        protocols.update(e.get("protocols", {}))
    for m, text in protocols.items():
        con.print(f"protocol {m}: {text}")


def sweep_keys(report: dict) -> list[str]:
    keys: list[str] = []
    for e in report["entries"]:
        for k in e["metrics"]:
            if k not in keys:
                keys.append(k)
    return keys


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in r])
    return buf.getvalue()


def report_csv(report: dict) -> str:
    """One row per generated video, then an aggregate row (set metrics such as fid only there)."""
    cols = metric_columns(report)
    cols += [k for k in report.get("metrics", {}) if k not in cols]
    header = list(ROW_INFO) + cols + ["errors"]
    rows = []
    for r in report.get("videos", []):
        errs = "; ".join(f"{k}: {v}" for k, v in r.get("errors", {}).items())
        rows.append([r.get(k) for k in ROW_INFO] + [r.get(c) for c in cols] + [errs])
    agg = report.get("metrics", {})
    rows.append([AGGREGATE_NAME] + [None] * (len(ROW_INFO) - 1) + [agg.get(c) for c in cols] + [""])
    return _csv_text(header, rows)


def sweep_csv(report: dict) -> str:
    param = report["sweep"]["param"]
    keys = sweep_keys(report)
    return _csv_text([param] + keys, [[e[param]] + [e["metrics"].get(k) for k in keys] for e in report["entries"]])


def csv_path(out) -> Path:
    return Path(out).with_suffix(".csv")


def write_report(report: dict, out) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the CSV beside it, atomically. -> (json path, csv path)."""
    out = Path(out)
    write_json(out, _jsonable(report))
    c = csv_path(out)
    write_text(c, sweep_csv(report) if "sweep" in report else report_csv(report))
    return out, c


def _jsonable(obj):
    """NaN / infinity are not JSON: they become null."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_report(path) -> Optional[dict]:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))
