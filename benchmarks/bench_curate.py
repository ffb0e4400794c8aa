"""Time `fada curate` on a labelled synthetic corpus and score sets A and B against its answer key.

    python benchmarks/bench_curate.py [--corpus DIR] [--count 60] [--workers N] [--recipe tiny-curate] [--out DIR]
        [--engine local|ray [--address HOST:PORT]]

With ``--engine ray`` it also curates the same corpus with the local engine on this machine and reports both
rates (videos per second) and Ray's overhead per video.

Without --corpus a corpus of --count clips is generated (not timed) into a temporary folder. Curation always
starts from an empty output folder (no cache). Prints one JSON object: seconds, workers, counts and the
answer-key numbers (A/B sizes, defect rates in A, clean recall of B, no_face rejections).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fada.data.synthetic import DEFECTS  # noqa: E402


def answer_key(rows: list[dict], labels: list[dict]) -> dict:
    """Compare manifest rows with ``labels.json`` (matched by file name)."""
    by_name = {Path(lab["file"]).name: lab for lab in labels}
    clips = [r for r in rows if r.get("video")]

    def defects(r):
        return by_name[Path(r["source_video"]).name]["defects"]

    a = [r for r in clips if r["in_A"]]
    b = [r for r in clips if r["in_B"]]
    clean_sources = {n for n, lab in by_name.items() if not lab["defects"]}
    clean_in_b = {Path(r["source_video"]).name for r in b if not defects(r)}
    no_face = [n for n, lab in by_name.items() if "no_face" in lab["defects"]]
    no_face_rows = {Path(r["source_video"]).name: r for r in rows if Path(r["source_video"]).name in no_face}
    no_face_ok = sum(1 for n in no_face if n in no_face_rows and not no_face_rows[n]["in_A"]
                     and not no_face_rows[n]["in_B"]
                     and "no_face" in no_face_rows[n].get("reasons", {}).get("strict", [])
                     and "no_face" in no_face_rows[n].get("reasons", {}).get("lenient", []))
    per_defect_a = Counter(d for r in a for d in defects(r))
    per_defect_b = Counter(d for r in b for d in defects(r))
    return {
        "videos": len(by_name),
        "clips": len(clips),
        "A": len(a),
        "B": len(b),
        "A_subset_of_B": {r["id"] for r in a} <= {r["id"] for r in b},
        "A_defect_rate": sum(bool(defects(r)) for r in a) / max(1, len(a)),
        "A_defects": {d: per_defect_a.get(d, 0) for d in DEFECTS},
        "B_defect_rate": sum(bool(defects(r)) for r in b) / max(1, len(b)),
        "B_defects": {d: per_defect_b.get(d, 0) for d in DEFECTS},
        "clean_videos": len(clean_sources),
        "B_clean_recall": len(clean_in_b) / max(1, len(clean_sources)),
        "A_clean_recall": len({Path(r["source_video"]).name for r in a if not defects(r)}) / max(1, len(clean_sources)),
        "no_face_videos": len(no_face),
        "no_face_rejected_with_reason": no_face_ok,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="existing corpus folder (videos/ + labels.json); default: generate one")
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="default: the recipe's (0: number of cores)")
    ap.add_argument("--recipe", default="tiny-curate")
    ap.add_argument("--out", help="output folder (default: a temporary one); emptied first")
    ap.add_argument("--engine", default="local", choices=["local", "ray"])
    ap.add_argument("--address", default=None, help="with --engine ray: a cluster (default: a local Ray instance)")
    args = ap.parse_args(argv)

    from fada.config import load_recipe
    from fada.data.synthetic import generate_corpus
    from fada.stages import curate

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "corpus"
        if not args.corpus:
            generate_corpus(corpus, count=args.count, seed=args.seed, progress=False)
        labels = json.loads((corpus / "labels.json").read_text())
        out = Path(args.out) if args.out else Path(tmp) / "curated"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        recipe = load_recipe(args.recipe, stage="curate")
        workers = args.workers if args.workers is not None else (recipe.curate.workers or curate.default_workers())
        t0 = time.perf_counter()
        curate.run(corpus / "videos", out, recipe, workers=workers, progress=False, engine=args.engine,
                   address=args.address)
        seconds = time.perf_counter() - t0
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        n = len(labels)
        result = {"engine": args.engine, "seconds": round(seconds, 2), "videos_per_second": round(n / seconds, 3),
                  "workers": workers, "recipe": args.recipe, **answer_key(rows, labels)}
        if args.engine == "ray":
            import shutil

            local_out = Path(tmp) / "curated-local"
            shutil.rmtree(local_out, ignore_errors=True)
            t0 = time.perf_counter()
            curate.run(corpus / "videos", local_out, recipe, workers=workers, progress=False)
            local = time.perf_counter() - t0
            result["local_seconds"] = round(local, 2)
            result["local_videos_per_second"] = round(n / local, 3)
            # wall-clock overhead per video (Ray start included), with the same workers
            result["ray_overhead_per_video_s"] = round((seconds - local) / n, 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
