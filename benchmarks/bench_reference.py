"""Does a model draw the face it is given? Prints one JSON object.

On held-out clips (new synthetic identities, unseen audio; the demo's ``test_clips``), for a teacher (or any model):

    one_step     PSNR (dB) of the net's one-step estimate of x0 from z_t = √ᾱ·x0 + √(1−ᾱ)·ε, conditional pass, per
                 noise level t. At t = 999 this is the net's guess of the frame from its reference and audio alone.
    swapped      the same with another identity's reference (its portrait and bank), and ``swap_gap`` = one_step −
                 swapped: a net that reads its reference loses many dB when given the wrong one.
    eps_mse      the ε error at each t (how well the net tells noise from image, most telling at low t).
    ddim         25-step DDIM from pure noise, unguided (conditional pass only) and at the default guidance, PSNR
                 against the truth frames of the clip.
    still_copy   the baseline: the reference frame repeated, PSNR against the same truth frames.

Two windows of F frames per clip: ``first_clip`` (motion frames = the reference, as at a video's start; the swap
replaces the whole portrait) and ``late_window`` (the clip's last whole window, the true frames before it as motion
frames, the first frame as reference, as in training; the swap replaces the reference only).

    python benchmarks/bench_reference.py MODEL [--clips 4] [--seed 777]

MODEL is a run folder, a checkpoint or an exported model folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

TIMES = (999, 750, 500, 250, 100, 20)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def _frames(pipe, z) -> np.ndarray:
    from fada.models.vae import tensor_to_frames

    return tensor_to_frames(pipe.codec.decode_video(z.permute(0, 2, 1, 3, 4))[0])


@torch.inference_mode()
def probe(pipe, clips, start: int = 0, times=TIMES, ddim_steps: int = 25, seed: int = 0) -> dict:
    """The figures of the module docstring on the window of F frames from ``start`` of every clip (dicts from
    ``fada.stages.demo.test_clips``). ``start`` 0: a video's first clip, whose motion frames are the reference
    (the swap replaces the whole portrait); ``start`` > 0: the motion frames are the true frames before the
    window, the reference is the clip's first frame, and the swap replaces the reference only."""
    from fada.diffusion import add_noise, conditional, sample_ddim
    from fada.models.vae import frames_to_tensor
    from fada.pipeline import AudioFeatures

    cfg, sch = pipe.model_cfg, pipe.spec.schedule
    F, M = cfg.num_frames, cfg.motion_frames
    g = torch.Generator().manual_seed(seed)
    encode = lambda frames: pipe.codec.encode_video(frames_to_tensor(frames, dtype=pipe.dtype)[None])  # (1, n, C, h, w)
    refs = [encode(c["truth"][:1])[:, 0] for c in clips]
    ref_banks = [pipe.encode_reference_bank(r) for r in refs]

    def bank(i: int, ref_of: int):
        if start == 0:
            return pipe.first_clip_bank(ref_banks[ref_of])
        motion = encode(clips[i]["truth"][start - M:start]) if M else None
        return pipe.encode_bank(refs[ref_of], motion, ref_banks[ref_of])

    acc: dict = {k: {t: [] for t in times} for k in ("one_step", "swapped", "eps_mse")}
    ddim, ddim_guided, still = [], [], []
    for i, c in enumerate(clips):
        truth = c["truth"][start:start + F]
        x0 = encode(truth).permute(0, 2, 1, 3, 4)
        feats = AudioFeatures(pipe.frontend, pipe.load_audio(c["audio"]), start + F, cfg.fps).rows(start, start + F)[None]
        own_bank = bank(i, i)
        own = pipe.net.model_fn(own_bank, feats)
        other = pipe.net.model_fn(bank(i, (i + 1) % len(clips)), feats)
        eps = torch.randn(x0.shape, generator=g)
        for t in times:
            ab = sch.ab(t)
            z = add_noise(x0, eps, ab)
            tt = torch.full((1,), float(t))
            for key, fn in (("one_step", own), ("swapped", other)):
                e = fn(z, tt)
                acc[key][t].append(psnr(_frames(pipe, sch.x0_eps(z, e, ab)[0]), truth))
                if key == "one_step":
                    acc["eps_mse"][t].append(float((sch.x0_eps(z, e, ab)[1] - eps).pow(2).mean()))
        noise = torch.randn(x0.shape, generator=g)
        guided = pipe.eps_fn(pipe.plan("teacher", ddim_steps), own_bank, feats)
        for out, fn in ((ddim, conditional(own)), (ddim_guided, guided)):
            out.append(psnr(_frames(pipe, sample_ddim(fn, noise.clone(), ddim_steps, sch)), truth))
        still.append(psnr(np.repeat(c["truth"][:1], len(truth), 0), truth))
    mean = lambda xs: round(float(np.mean(xs)), 2)
    res = {k: {str(t): mean(v[t]) for t in times} for k, v in acc.items() if k != "eps_mse"}
    res["swap_gap"] = {str(t): round(res["one_step"][str(t)] - res["swapped"][str(t)], 2) for t in times}
    res["eps_mse"] = {str(t): round(float(np.mean(acc["eps_mse"][t])), 4) for t in times}
    res.update(ddim_unguided=mean(ddim), ddim_guided=mean(ddim_guided), still_copy=mean(still), clips=len(clips),
               frames=f"{start}-{start + F - 1}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from bench_distill import load  # the same run-folder / checkpoint / export loading

    from fada.stages.demo import test_clips

    with tempfile.TemporaryDirectory() as tmp:
        pipe = load(Path(args.model), Path(tmp), "model")
        clips = test_clips(args.clips, args.seconds, pipe.resolution, args.seed)
        mid = int(args.seconds * pipe.model_cfg.fps) - pipe.model_cfg.num_frames  # the last whole window
        print(json.dumps({"first_clip": probe(pipe, clips, 0), "late_window": probe(pipe, clips, mid)}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
