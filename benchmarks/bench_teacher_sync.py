"""Does a trained (tiny) teacher move the mouth with the audio? Prints one JSON object.

Renders held-out talking clips (new identities, unseen audio) with the synthetic generator, generates each from its
first frame and its audio with the teacher (DDIM 25 steps, multi-CFG), and scores the generated face crops with
curate's weight-free audio-visual sync measure (fada.metrics.av_sync on the mouth box of a curate crop) against
their own audio and against another clip's audio (shuffled). A model that follows the audio scores clearly higher on
its own audio. The ground truth is scored the same way, on its face crops at the model's resolution (the demo's
held-out clips, fada.stages.demo.test_clips).

    python benchmarks/bench_teacher_sync.py RUN_DIR [--clips 6] [--seconds 3] [--seed 1234] [--mode teacher]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def score_sync(videos, audios, sr=16000, fps=25):
    """Sync confidence of each face-crop video with its own audio and with the next clip's audio."""
    from fada.evaluation.faces import mouth_box
    from fada.metrics.av_sync import WeightFreeSync

    sync = WeightFreeSync(max_offset=15, mouth_box=mouth_box())
    own = [sync.score(v, a, sr, fps)["av_corr_conf"] for v, a in zip(videos, audios)]
    shuffled = [sync.score(v, audios[(i + 1) % len(audios)], sr, fps)["av_corr_conf"] for i, v in enumerate(videos)]
    return own, shuffled


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="teacher run folder or checkpoint (or an exported model folder)")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--mode", default=None)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fada.pipeline import FadaPipeline
    from fada.stages.demo import test_clips

    src = Path(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        if not (src / "fada_model.json").is_file():
            from fada.stages.export import run as export

            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
                export(checkpoint=src, out=Path(tmp) / "model", dtype="fp32", ema=True)
            src = Path(tmp) / "model"
        pipe = FadaPipeline.from_pretrained(src)
        clips = test_clips(args.clips, args.seconds, pipe.resolution, args.seed)
        t0 = time.perf_counter()
        videos = [np.concatenate(list(pipe.generate_frames(c["portrait"], c["audio"], mode=args.mode, steps=args.steps,
                                                           seed=i)))
                  for i, c in enumerate(clips)]
        seconds = time.perf_counter() - t0
    audios = [c["audio"] for c in clips]
    own, shuffled = score_sync(videos, audios)
    truth_own, truth_shuffled = score_sync([c["truth"] for c in clips], audios)
    print(json.dumps({"clips": len(clips), "sync": float(np.mean(own)), "shuffled_audio_sync": float(np.mean(shuffled)),
                      "per_clip": [round(x, 3) for x in own], "per_clip_shuffled": [round(x, 3) for x in shuffled],
                      "ground_truth_sync": float(np.mean(truth_own)),
                      "ground_truth_shuffled_sync": float(np.mean(truth_shuffled)),
                      "generation_seconds": round(seconds, 1)}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
