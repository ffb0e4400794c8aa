"""How far do the demo's figures carry? Its models on more held-out identities. Prints one JSON object.

`fada demo` scores its models on 4 held-out identities (``test_clips`` seed 777), so a gap between two models'
means carries the spread of 4 clips. This generates the same models on N other new identities (unseen audio) the
way the demo does (its seeds, its teacher steps) and prints, per model, the report's columns
(``fada.stages.demo.evaluate``), the still copy's and held pose's rows, each clip's mouth-box PSNR, and the paired
per-clip gap teacher − student in the mouth box with its standard error: a 4-clip gap is that many dB uncertain
(sd / 2).

    python benchmarks/bench_heldout.py DEMO_DIR [--clips 12] [--seed 1234] [--seconds 3] [--out FILE]

DEMO_DIR is the folder `fada demo` wrote (its ``models/teacher``, ``models/balanced``, ``models/fast``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

MODELS = ("teacher", "balanced", "fast")


def paired_gap(a, b) -> dict:
    """Per-clip differences a − b: their mean, sample standard deviation and the mean's standard error."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"mean": float(d.mean()), "sd": sd, "se": sd / float(np.sqrt(d.size))}


def score(videos: dict, clips: list) -> dict:
    """The report's columns per row of ``videos`` (name -> one video per clip) plus per-clip mouth-box PSNR, and
    the still copy / held pose rows."""
    from fada.evaluation.faces import mouth_box
    from fada.evaluation.regions import region_scores
    from fada.stages.demo import evaluate, still_reference

    rows = {**videos, "reference": [still_reference(c) for c in clips], "held pose": [c["held"] for c in clips]}
    out = {}
    for name, vids in rows.items():
        per = [region_scores(c["truth"], v, mouth_box())["psnr_mouth"] for v, c in zip(vids, clips)]
        out[name] = {**evaluate(vids, clips), "psnr_mouth_per_clip": per}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo_dir")
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1234, help="test_clips seed (the demo's own is 777)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from tqdm import tqdm

    from fada.errors import FadaError
    from fada.pipeline import FadaPipeline
    from fada.stages.demo import test_clips
    from fada.utils.io import write_json

    root = Path(args.demo_dir) / "models"
    missing = [str(root / m) for m in MODELS if not (root / m).is_dir()]
    if missing:
        raise SystemExit(f"bench_heldout: no exported model at {', '.join(missing)} (run `fada demo` first)")
    try:
        pipes = {m: FadaPipeline.from_pretrained(root / m) for m in MODELS}
    except FadaError as e:
        raise SystemExit(f"bench_heldout: {e}") from None
    clips = test_clips(args.clips, args.seconds, pipes["teacher"].resolution, args.seed)
    videos = {m: [] for m in MODELS}
    with tqdm(total=len(MODELS) * len(clips), desc="generate", unit="clip") as bar:
        for m, pipe in pipes.items():
            for i, c in enumerate(clips):  # the demo's seeds: clip i with seed i
                videos[m].append(np.concatenate(list(pipe.generate_frames(c["portrait"], c["audio"], seed=i))))
                bar.update()
    rows = score(videos, clips)
    gaps = {s: paired_gap(rows["teacher"]["psnr_mouth_per_clip"], rows[s]["psnr_mouth_per_clip"])
            for s in ("balanced", "fast")}
    res = {"clips": args.clips, "seed": args.seed, "seconds": args.seconds, "rows": rows,
           "mouth_gap_teacher_minus": gaps}
    if args.out:
        write_json(args.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
