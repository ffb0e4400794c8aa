"""Does a trained (tiny) teacher move the mouth with the audio? Prints one JSON object.

Renders held-out talking clips (new identities, unseen audio) with the synthetic generator, generates each from its
first frame and its audio with the teacher (DDIM 25 steps, multi-CFG), and scores the generated videos with the
weight-free audio-visual sync measure (fada.metrics.av_sync) against their own audio and against another clip's
audio (shuffled). A model that follows the audio scores clearly higher on its own audio.

    python benchmarks/bench_teacher_sync.py RUN_DIR [--clips 6] [--seconds 3] [--mode teacher]
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


def held_out_clips(n: int, seconds: float, seed: int, size: int = 128):
    from fada.data.synthetic import render_clip, sample_identity, synth_speech

    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        ident = sample_identity(rng)
        audio = synth_speech(seconds, rng)
        clips.append((render_clip(ident, audio, size=size, seed=seed + i), audio))
    return clips


def score_sync(videos, audios, sr=16000, fps=25):
    """Mean weight-free sync confidence of each video with its own audio and with the next clip's audio."""
    from fada.metrics.av_sync import WeightFreeSync

    sync = WeightFreeSync(max_offset=15)
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
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fada.pipeline import FadaPipeline

    src = Path(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        if not (src / "fada_model.json").is_file():
            from fada.stages.export import run as export

            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
                export(checkpoint=src, out=Path(tmp) / "model", dtype="fp32", ema=True)
            src = Path(tmp) / "model"
        pipe = FadaPipeline.from_pretrained(src)
        clips = held_out_clips(args.clips, args.seconds, args.seed)
        t0 = time.perf_counter()
        videos = [np.concatenate(list(pipe.generate_frames(frames[0], audio, mode=args.mode, seed=i)))
                  for i, (frames, audio) in enumerate(clips)]
        seconds = time.perf_counter() - t0
    audios = [a for _, a in clips]
    own, shuffled = score_sync(videos, audios)
    truth_own, truth_shuffled = score_sync([f for f, _ in clips], audios)
    print(json.dumps({"clips": len(clips), "sync": float(np.mean(own)), "shuffled_audio_sync": float(np.mean(shuffled)),
                      "per_clip": [round(x, 3) for x in own], "per_clip_shuffled": [round(x, 3) for x in shuffled],
                      "ground_truth_sync": float(np.mean(truth_own)),
                      "ground_truth_shuffled_sync": float(np.mean(truth_shuffled)),
                      "generation_seconds": round(seconds, 1)}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
