"""Curation report: what each filter removed at each level (Markdown table + JSON) and score histograms (PNG).

Counts per filter: ``failed`` = clips that fail it (a clip can fail several), ``only`` = clips it alone
rejects. Videos that gave no clip (no_face, too_short) and skipped files are counted as videos.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from fada.curation.select import FILTERS, VIDEO_REASONS
from fada.utils.io import atomic_path, write_json, write_text

HIST_SCORES = (  # score, threshold attribute(s) (min, max), axis label
    ("sharpness", "min_sharpness", None, "sharpness (Laplacian variance)"),
    ("brightness", "min_brightness", "max_brightness", "brightness (mean luma)"),
    ("face_size", "min_face_size", None, "face size (px)"),
    ("sync_offset", None, "max_sync_offset", "sync offset (frames), ±"),
    ("sync_confidence", "min_sync_confidence", None, "sync confidence"),
    ("background_motion", None, "max_background_motion", "background motion (grey levels/frame)"),
    ("head_motion", None, "max_head_motion", "head motion (face sizes/frame)"),
    ("mouth_motion", "min_mouth_motion", None, "mouth motion"),
)


def summarize(rows: list[dict]) -> dict:
    clips = [r for r in rows if "scores" in r and r.get("video")]
    videos_no_clip = [r for r in rows if r.get("status") in VIDEO_REASONS]
    skipped = [r for r in rows if "skipped" in r]
    out = {
        "videos": len({r["source_video"] for r in rows}),
        "clips": len(clips),
        "A": sum(r["in_A"] for r in clips),
        "B": sum(r["in_B"] for r in clips),
        "hours": {"all": sum(r["end"] - r["start"] for r in clips) / 3600,
                  "A": sum(r["end"] - r["start"] for r in clips if r["in_A"]) / 3600,
                  "B": sum(r["end"] - r["start"] for r in clips if r["in_B"]) / 3600},
        "filters": {},
        "videos_without_clips": dict(Counter(r["status"] for r in videos_no_clip)),
        "skipped": [{"video": r["source_video"], "reason": r["skipped"], "detail": r.get("detail", "")}
                    for r in skipped],
    }
    for f in FILTERS:
        entry = {"group": f.group}
        for level in ("strict", "lenient"):
            failed = [r for r in clips if f.name in r["reasons"][level]]
            entry[level] = {"failed": len(failed), "only": sum(r["reasons"][level] == [f.name] for r in failed)}
        out["filters"][f.name] = entry
    return out


def markdown(summary: dict, cfg) -> str:
    s = summary
    lines = [
        "# Curation report",
        "",
        f"{s['videos']} source videos -> {s['clips']} clips ({s['hours']['all'] * 60:.1f} min); "
        f"**A** (strict, teacher): {s['A']} clips ({s['hours']['A'] * 60:.1f} min); "
        f"**B** (lenient, student): {s['B']} clips ({s['hours']['B'] * 60:.1f} min).",
        "",
        "Clips removed per filter (failed: clips failing it; only: clips it alone removed).",
        "",
        "| dimension | filter | strict threshold | strict failed | strict only | lenient threshold | lenient failed "
        "| lenient only |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for f in FILTERS:
        e = s["filters"][f.name]
        lines.append(f"| {f.group} | {f.name} | {_threshold(f.name, cfg.strict)} | {e['strict']['failed']} | "
                     f"{e['strict']['only']} | {_threshold(f.name, cfg.lenient)} | {e['lenient']['failed']} | "
                     f"{e['lenient']['only']} |")
    for reason in VIDEO_REASONS:
        n = s["videos_without_clips"].get(reason, 0)
        lines.append(f"| face track | {reason} (videos) | - | {n} | {n} | - | {n} | {n} |")
    lines.append(f"| input | skipped files | - | {len(s['skipped'])} | {len(s['skipped'])} | - | "
                 f"{len(s['skipped'])} | {len(s['skipped'])} |")
    if s["skipped"]:
        lines += ["", "## Skipped files", ""]
        lines += [f"- `{k['video']}`: {k['reason']} ({k['detail']})" for k in s["skipped"]]
    lines += ["", "Score histograms: `histograms.png` (solid lines: strict thresholds, dashed: lenient).", ""]
    return "\n".join(lines)


def _threshold(name: str, t) -> str:
    return {
        "source": ", ".join(t.sources) if t.sources else "any",
        "sharpness": f">= {t.min_sharpness:g}",
        "brightness": f"{t.min_brightness:g}-{t.max_brightness:g}",
        "face_size": f">= {t.min_face_size:g}",
        "sync_offset": f"abs <= {t.max_sync_offset:g}",
        "sync_confidence": f">= {t.min_sync_confidence:g} (SyncNet {t.min_syncnet_confidence:g})",
        "background_motion": f"<= {t.max_background_motion:g}",
        "head_motion": f"<= {t.max_head_motion:g}",
        "mouth_motion": f">= {t.min_mouth_motion:g}",
    }[name]


def histograms(rows: list[dict], cfg, target: str | os.PathLike) -> Path:
    """One PNG with a histogram per score over all clips, strict (solid) and lenient (dashed) thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = [r for r in rows if "scores" in r and r.get("video")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (name, lo, hi, label) in zip(axes.ravel(), HIST_SCORES):
        vals = [r["scores"][name] for r in clips if r["scores"].get(name) is not None]
        in_a = [r["scores"][name] for r in clips if r["in_A"] and r["scores"].get(name) is not None]
        if vals:
            bins = np.histogram_bin_edges(vals, bins=30)
            ax.hist(vals, bins=bins, color="#b0b0b0", label="all clips")
            ax.hist(in_a, bins=bins, color="#3b7dd8", alpha=0.8, label="in A")
        for t, style in ((cfg.strict, "-"), (cfg.lenient, "--")):
            for attr in (lo, hi):
                if attr is None:
                    continue
                v = getattr(t, attr)
                ax.axvline(v, color="#d83b3b", linestyle=style, linewidth=1)
                if name == "sync_offset":
                    ax.axvline(-v, color="#d83b3b", linestyle=style, linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("clips")
    axes.ravel()[0].legend(fontsize=8)
    fig.suptitle(f"curation scores ({len(clips)} clips)")
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return Path(target)


def write_report(out_dir: str | os.PathLike, rows: list[dict], cfg) -> dict:
    """Write report.md, report.json and histograms.png into ``out_dir``; returns the summary."""
    out_dir = Path(out_dir)
    summary = summarize(rows)
    write_json(out_dir / "report.json", summary)
    write_text(out_dir / "report.md", markdown(summary, cfg))
    histograms(rows, cfg, out_dir / "histograms.png")
    return summary
