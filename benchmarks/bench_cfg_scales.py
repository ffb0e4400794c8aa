"""Does a Fast student follow the guidance scales it is told (Eq. 10)? Prints one JSON object.

For every (cfg_audio, cfg_ref) of a grid, generates the same held-out inputs (new synthetic identities, unseen
audio, the same seeds) with the teacher (DDIM 25 steps, multi-CFG at those scales: 75 NFE per clip) and with each
Fast STUDENT told those scales (6 NFE), and reports each student's PSNR against the teacher per scale and over the
grid. A student that ignores the scales it is told loses most at the grid's ends. ``teacher_spread`` is how far
the teacher's own videos move between the grid's extremes: the size of what there is to follow.

Used for Eq. 10's LayerNorm question: distil the same teacher with ``model.cfg.normalize=false`` (the
paper's Eq. 10) and ``=true`` (LayerNorm on Emb_cfg) and compare them here.

    python benchmarks/bench_cfg_scales.py TEACHER STUDENT [STUDENT ...] [--audio 1.5,3,4.5,6.5,8] [--ref 1,1.5]
        [--clips 2] [--seconds 2.0]

TEACHER and STUDENT are run folders, checkpoints or exported model folders.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench_distill import distances, load  # noqa: E402  (benchmarks/ is the script's folder)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    from fada.stages.demo import test_clips

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teacher", type=Path)
    p.add_argument("students", type=Path, nargs="+")
    p.add_argument("--audio", type=floats, default=floats("1.5,3,4.5,6.5,8"), help="cfg_audio values")
    p.add_argument("--ref", type=floats, default=floats("1,1.5"), help="cfg_ref values")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=777)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = load(args.teacher, Path(tmp), "teacher")
        students = {str(s): load(s, Path(tmp), f"student{i}") for i, s in enumerate(args.students)}
        for name, pipe in students.items():
            if "fast" not in pipe.spec.modes:
                p.error(f"{name}: not a Fast model (modes {pipe.spec.modes})")
        clips = test_clips(args.clips, args.seconds, teacher.resolution, args.seed)

        def run(pipe, **kw):
            return [np.concatenate(list(pipe.generate_frames(c["portrait"], c["audio"], seed=i, **kw)))
                    for i, c in enumerate(clips)]

        rows, teacher_videos = [], {}
        for a in args.audio:
            for r in args.ref:
                ref = run(teacher, mode="teacher", steps=25, cfg_audio=a, cfg_ref=r)
                teacher_videos[(a, r)] = ref
                row = {"cfg_audio": a, "cfg_ref": r}
                for name, pipe in students.items():
                    row[name] = distances(run(pipe, mode="fast", cfg_audio=a, cfg_ref=r), ref)["psnr"]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    lo, hi = (min(args.audio), min(args.ref)), (max(args.audio), max(args.ref))
    summary = {name: {"mean_psnr_vs_teacher": round(float(np.mean([row[name] for row in rows])), 2),
                      "min_psnr_vs_teacher": round(float(np.min([row[name] for row in rows])), 2)}
               for name in students}
    print(json.dumps({"clips": len(clips), "seconds": args.seconds, "grid": rows, "summary": summary,
                      "teacher_spread_psnr": distances(teacher_videos[hi], teacher_videos[lo])["psnr"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
