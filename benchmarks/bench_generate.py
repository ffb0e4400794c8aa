"""Generation speed of the three modes on one model and the same inputs; prints one JSON object.

    python benchmarks/bench_generate.py                        # tiny (tiny-teacher recipe at 64x64), CPU, 1 thread
    python benchmarks/bench_generate.py --resolution 32        # the demo's own 32x32 shapes
    python benchmarks/bench_generate.py --scale full --device cuda   # SD1.5 shapes at 512x512, random weights

The tiny default runs the tiny-teacher recipe's net at 64x64 (2.1 M parameters, 32x32 latents): at the demo's 32x32
a pass is so small that the fixed Python cost of a call (about 11 ms) outweighs its arithmetic, which favours
batched multi-CFG passes in a way no real model size does; 64x64 is the smallest size whose passes are
compute-bound, as they are at full scale on a GPU. ``--resolution 32`` measures the demo's shapes.

One teacher AvatarNet with random weights; the Balanced student is it with no CFG conditioning and the Fast
student it plus CFG tokens (`AvatarNet.from_teacher`), so all three share every weight they have in common. Each
mode runs the whole pipeline (face crop, audio features, per-clip bank, sampling, decoding, H.264 + AAC writing)
on the same portrait and audio after a one-clip warm-up; the modes are interleaved over ``--repeats`` rounds
and per mode the fastest run counts.

Keys: ``teacher``/``balanced``/``fast`` each with ``nfe`` (denoiser passes per clip), ``seconds``,
``seconds_per_video_second``, ``frames_per_second`` and ``denoiser_share`` (the part of the wall time spent in the
denoiser passes, from the per-step timings under ``components_ms``); ``ratio_teacher_fast`` and
``ratio_teacher_balanced`` (wall-time ratios; the NFE ratios are 12.5 and 4.17).

``--dtype`` and ``--attention`` take comma lists (``--dtype fp16,bf16 --attention sdpa,xformers``): the models are built
once and every (dtype, attention backend) pair is measured in the same process, one after another; the first pair
fills the top-level keys and ``variants`` lists every pair's figures, with ``max_abs_diff_vs_first`` (the largest
difference of one Fast step's ε from the first pair's on the same inputs, a check that the backends agree).

``ms_single_pass`` ({teacher, fast}): one unbatched teacher pass (every condition kept, no CFG layer) and one Fast
pass (the CFG layer reading Eq. 10's tokens) on the same inputs, interleaved, the fastest of each; their ratio is
``fast_pass_over_teacher_pass``. ``wall_over_denoiser_ratio``: the teacher/Fast wall-time ratio over the
denoiser-only one (1.0: every fixed cost is off the critical path).

``--decoder taesd`` decodes with a random TAESD (diffusers ``AutoencoderTiny``, its default config, saved and loaded
like a user's folder; full scale only: it needs the SD VAE's latent space). ``--compile`` compiles each pipeline
(``FadaPipeline.compile``; CUDA graphs on a GPU) and warms it up on one clip; ``compile_seconds`` reports that apart
from every timed figure. ``--sequential`` decodes on the denoiser's thread instead of the worker. ``--profile`` runs
one more Fast video under torch.profiler, decoding in line so that the steps add up, and reports ``profile_fast``:
each labelled step's milliseconds per clip and share of the wall time (on CUDA every step waits for its own GPU
work, so the host-side times are the steps' own); the same table goes to stderr in Markdown.

Full scale needs no download: the SD1.5-shaped UNets, the SD VAE and a base-sized wav2vec2 are built with random
weights (speed does not depend on them); the VAE and wav2vec2 are saved to a temporary folder so that the real
loaders run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fada.config import load_recipe  # noqa: E402
from fada.config.model import AudioConfig, ModelConfig, VAEConfig  # noqa: E402
from fada.export import spec_for  # noqa: E402
from fada.models.avatar import AvatarNet, build_avatar_net  # noqa: E402
from fada.pipeline import FadaPipeline  # noqa: E402

MODES = ("teacher", "balanced", "fast")


def write_portrait(path: Path) -> Path:
    """skimage's astronaut portrait (512x512 RGB) as a png."""
    import cv2
    from skimage import data

    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def write_speech(path: Path, seconds: float, sr: int = 16000) -> Path:
    """A speech-like signal (voiced bursts at a syllable rate plus a little noise) of ``seconds``."""
    from fada.data.media import write_wav

    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    voiced = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t)) ** 2
    sig = voiced * (0.3 * np.sin(2 * np.pi * 140 * t) + 0.1 * np.sin(2 * np.pi * 280 * t))
    sig = sig + 0.01 * rng.standard_normal(n)
    return write_wav(path, (0.8 * sig / max(np.abs(sig).max(), 1e-6)).astype(np.float32), sr)


def full_model_config(tmp: Path, args) -> ModelConfig:
    """SD1.5 shapes (ModelConfig defaults) with a random SD VAE and a random base wav2vec2 saved under tmp."""
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    sd = tmp / "sd15"
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, sample_size=512)
    vae.save_pretrained(str(sd / "vae"), safe_serialization=True)
    w2v = tmp / "wav2vec2"
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(str(w2v), safe_serialization=True)
    cfg = ModelConfig(vae=VAEConfig(kind="sd", path=str(sd)), audio=AudioConfig(kind="wav2vec2", path=str(w2v)))
    return _overrides(cfg, args)


def _overrides(cfg: ModelConfig, args) -> ModelConfig:
    if args.resolution:
        cfg.resolution = args.resolution
    if args.frames:
        cfg.num_frames = args.frames
    if args.unet_channels:
        cfg.unet.block_out_channels = [int(c) for c in args.unet_channels.split(",")]
    return cfg


TINY_BENCH_RESOLUTION = 64


def tiny_model_config(args) -> ModelConfig:
    cfg = load_recipe("tiny-teacher", stage="teacher").model
    cfg.resolution = TINY_BENCH_RESOLUTION
    return _overrides(cfg, args)


def write_taesd(tmp: Path) -> Path:
    """A random TAESD (diffusers AutoencoderTiny, default config: madebyollin/taesd's shapes) saved under tmp."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(str(tmp / "taesd"), safe_serialization=True)
    return tmp / "taesd"


def build_pipelines(cfg: ModelConfig, device, dtype, feature_shape=None, decoder=None, modes=MODES) -> dict:
    """Teacher, Balanced and Fast pipelines (those in ``modes``; the teacher always, the students are made from
    it) sharing the teacher's weights. Each net moves to the device before the next is built, so at full scale the
    host holds one fp32 net at a time."""
    torch.manual_seed(0)
    teacher = build_avatar_net(cfg, audio_feature_shape=feature_shape).eval()
    pipes = {"teacher": FadaPipeline.from_net(teacher, spec_for(teacher, cfg, "teacher"), device=device, dtype=dtype,
                                              decoder=decoder)}
    teacher_pipe = pipes["teacher"]
    for kind, mode in (("balanced", "none"), ("fast", "tokens")):
        if kind not in modes:
            continue
        net = AvatarNet.from_teacher(teacher_pipe.net, mode).eval()
        pipes[kind] = FadaPipeline.from_net(net, spec_for(net, cfg, kind), device=device, dtype=dtype,
                                            decoder=decoder)
    if "teacher" not in modes:
        del pipes["teacher"]
    return pipes


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step_inputs(pipe: FadaPipeline, mode: str, seed: int = 0, single: bool = False):
    """Random latents, reference, motion frames and audio features of one clip on the pipeline's device, and the
    ε function of one sampler step of ``mode`` (all its passes; ``single``: one unbatched pass, every condition
    kept) over them, as the pipeline builds it."""
    from fada.diffusion import conditional

    plan = pipe.plan(mode)
    net, cfg = pipe.net, pipe.model_cfg
    res = cfg.resolution // pipe.codec.downsample
    c, f, m = net.latent_channels, cfg.num_frames, cfg.motion_frames
    dev, dt = pipe.device, pipe.dtype
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(1, c, res, res, generator=g).to(dev, dt)
    motion = torch.randn(1, m, c, res, res, generator=g).to(dev, dt) if m else None
    z = torch.randn(1, c, f, res, res, generator=g).to(dev, dt)
    feats = torch.randn(1, f, *net.audio_feature_shape, generator=g)
    with torch.inference_mode():
        bank = net.encode_bank(ref, motion)
    if single:
        scales = torch.tensor([[plan.cfg_audio, plan.cfg_ref]], device=dev) if plan.told_scales else None
        eps = conditional(net.model_fn(bank, feats.to(dev, dt), cfg_scales=scales, branch_keep_ref=[True]))
    else:
        eps = pipe.eps_fn(plan, bank, feats)
    return ref, motion, z, lambda: eps(z, torch.full((1,), 500.0, device=dev))


def component_times(pipe: FadaPipeline, mode: str, repeats: int = 3) -> dict:
    """Milliseconds of one bank encode, one sampler step (all passes of one step) and one clip decode."""
    dev = pipe.device

    def best(fn):
        fn()
        _sync(dev)
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            out.append(time.perf_counter() - t0)
        return 1e3 * min(out)

    with torch.inference_mode():
        ref, motion, z, step = step_inputs(pipe, mode)
        out = {"bank_encode": best(lambda: pipe.net.encode_bank(ref, motion)), "step": best(step),
               "decode": best(lambda: pipe.decode_frames(z[0].transpose(0, 1)))}
        if mode in ("teacher", "fast") and not pipe.compiled:  # a batch of one is a new shape to a compiled net
            out["single_pass"] = best(step_inputs(pipe, mode, single=True)[-1])
        return out


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def fast_step_eps(pipe: FadaPipeline) -> torch.Tensor:
    """One Fast-mode ε prediction on fixed random inputs (to compare dtypes and attention backends)."""
    with torch.inference_mode():
        return step_inputs(pipe, "fast", seed=1)[-1]()


def warm_steps(pipe: FadaPipeline, mode: str) -> int:
    """The fewest steps a mode's sampler takes (a warm-up runs every shape whatever the step count)."""
    return 1 if mode == "teacher" else max(1, pipe.spec.num_windows)


def measure(pipes: dict, portrait: Path, audio: Path, tmp: Path, repeats: int, crop: bool = True,
            overlap: bool = True) -> dict:
    """Whole-pipeline times of the three modes (fastest of ``repeats`` interleaved rounds) and their ratios."""
    out: dict = {}
    modes = [m for m in MODES if m in pipes]
    for mode in modes:  # warm-up: one clip each (compiled pipelines were warmed up when compiled)
        if not pipes[mode].compiled:
            pipes[mode].warm_up(portrait, mode=mode, steps=warm_steps(pipes[mode], mode), crop=crop)
    # Rounds interleave the modes, so that load from other processes on a shared machine hits all of them
    # alike; per mode the fastest run counts.
    runs: dict = {m: [] for m in modes}
    comps: dict = {m: [] for m in modes}
    for _ in range(max(1, repeats)):
        for mode in modes:
            runs[mode].append(pipes[mode](portrait, audio, mode=mode, out=tmp / f"{mode}.mp4", crop=crop,
                                          progress=False, overlap=overlap))
        for mode in modes:
            comps[mode].append(component_times(pipes[mode], mode, repeats=2))
    for mode in modes:
        best = min(runs[mode], key=lambda r: r.seconds)
        comp = {k: min(c[k] for c in comps[mode]) for k in comps[mode][0]}
        denoise = best.clips * best.plan.steps * comp["step"] / 1e3
        out[mode] = {"nfe": best.nfe_per_clip, "steps": best.plan.steps, "seconds": round(best.seconds, 3),
                     "seconds_per_video_second": round(best.seconds_per_video_second, 4),
                     "frames_per_second": round(best.frames / best.seconds, 3),
                     "denoiser_share": round(denoise / best.seconds, 3),
                     "components_ms": {k: round(v, 2) for k, v in comp.items()}}
    den = {m: out[m]["components_ms"]["step"] * out[m]["steps"] for m in modes}
    for m in (modes[1:] if modes[0] == "teacher" else []):  # the teacher's wall, NFE, denoiser-only ratios
        out[f"ratio_teacher_{m}"] = round(out["teacher"]["seconds_per_video_second"]
                                          / out[m]["seconds_per_video_second"], 2)
        out[f"nfe_ratio_teacher_{m}"] = round(out["teacher"]["nfe"] / out[m]["nfe"], 2)
        # the ratio the denoiser passes alone allow (no bank, audio, decode or writing): below the NFE ratio
        # because the unconditional branch of a multi-CFG batch reads no reference bank and costs less
        out[f"denoiser_only_ratio_teacher_{m}"] = round(den["teacher"] / den[m], 2)
    # what one denoiser pass costs in each mode (a batched multi-CFG step counts 3 passes)
    out["ms_per_pass"] = {m: round(out[m]["components_ms"]["step"] * out[m]["steps"] / out[m]["nfe"], 2)
                          for m in modes}
    if "fast" in modes and "teacher" in modes:
        out["wall_over_denoiser_ratio"] = round(out["ratio_teacher_fast"] / out["denoiser_only_ratio_teacher_fast"],
                                                3)
    if {"fast", "teacher"} <= set(modes) and "single_pass" in out["fast"]["components_ms"]:
        single = {m: out[m]["components_ms"].pop("single_pass") for m in ("teacher", "fast")}
        out["ms_single_pass"] = {m: round(v, 2) for m, v in single.items()}
        out["fast_pass_over_teacher_pass"] = round(single["fast"] / single["teacher"], 4)
    return out


def profile_fast(pipe: FadaPipeline, portrait: Path, audio: Path, tmp: Path, crop: bool = True) -> dict:
    """One Fast video under torch.profiler, decoded in line: per labelled step (``fada.*``) its milliseconds per
    clip and share of the wall time; ``other`` is what no label covers (Python between the steps)."""
    import fada.clips as fp
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pipe.device.type == "cuda" else [])
    fp.PROFILE_SYNC = True
    try:
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            res = pipe(portrait, audio, mode="fast", out=tmp / "profile.mp4", crop=crop, progress=False,
                       overlap=False)
            wall = time.perf_counter() - t0
    finally:
        fp.PROFILE_SYNC = False
    steps = {e.key[len("fada."):]: e.cpu_time_total / 1e3 for e in prof.key_averages() if e.key.startswith("fada.")}
    steps["other"] = max(0.0, wall * 1e3 - sum(steps.values()))
    table = {k: {"ms_per_clip": round(v / res.clips, 1), "share": round(v / (wall * 1e3), 3)}
             for k, v in sorted(steps.items(), key=lambda kv: -kv[1])}
    lines = ["| step | ms per clip | share |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['ms_per_clip']:.1f} | {100 * v['share']:.1f} % |" for k, v in table.items()]
    print("\n".join(lines), file=sys.stderr, flush=True)
    return {"wall_seconds": round(wall, 3), "clips": res.clips, "steps": table}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda for full scale when present)")
    ap.add_argument("--dtype", default=None,
                    help="fp32|fp16|bf16, or a comma list; default fp32 on CPU, fp16 on CUDA")
    ap.add_argument("--attention", default="auto",
                    help="auto|sdpa|xformers, or a comma list (xformers needs CUDA and the xformers package)")
    ap.add_argument("--no-crop", action="store_true",
                    help="skip the face crop (OpenCV 5 builds have no Haar detector; the crop costs milliseconds)")
    ap.add_argument("--clips", type=int, default=4, help="clips of audio per video (per-clip costs amortise)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds (modes interleaved); the fastest counts")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: batching gets no free cores)")
    ap.add_argument("--resolution", type=int, default=None, help="override the model resolution (smoke tests)")
    ap.add_argument("--frames", type=int, default=None, help="override frames per clip (smoke tests)")
    ap.add_argument("--unet-channels", default=None, help="override block_out_channels, e.g. 32,64,64,64 (smoke tests)")
    ap.add_argument("--decoder", choices=["sd", "taesd"], default="sd",
                    help="sd: the model's codec; taesd: a random TAESD (AutoencoderTiny; full scale only)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser and decoder (CUDA graphs on GPU)")
    ap.add_argument("--sequential", action="store_true", help="decode on the denoiser's thread (no worker)")
    ap.add_argument("--profile", action="store_true", help="profile one more Fast video (profile_fast)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma list of modes to measure (ratios need the teacher; at full scale on a 24 GB host, "
                         "teacher,fast keeps two nets in memory instead of three)")
    args = ap.parse_args(argv)
    modes = tuple(m for m in MODES if m in args.modes.split(","))
    if not modes:
        ap.error(f"--modes {args.modes!r}: name one or more of {', '.join(MODES)}")
    if args.decoder == "taesd" and args.scale != "full":
        ap.error("--decoder taesd needs --scale full (TAESD decodes the SD VAE's latents)")

    device = args.device or ("cuda" if args.scale == "full" and torch.cuda.is_available() else "cpu")
    if device == "cpu":
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    dtypes = [DTYPES[d.strip()] for d in (args.dtype or ("fp32" if device == "cpu" else "fp16")).split(",")]
    backends = [b.strip() for b in args.attention.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        if args.scale == "full":
            cfg = full_model_config(tmp, args)
            from fada.models.audio import build_audio_frontend

            shape = build_audio_frontend(cfg.audio).feature_shape
        else:
            cfg, shape = tiny_model_config(args), None
        decoder = f"taesd:{write_taesd(tmp)}" if args.decoder == "taesd" else None
        pipes = build_pipelines(cfg, device, dtypes[0], shape, decoder, modes)
        build_s = time.perf_counter() - t0
        any_pipe = next(iter(pipes.values()))
        sr = any_pipe.frontend.sample_rate
        frames = args.clips * cfg.num_frames
        seconds = frames / cfg.fps
        portrait = write_portrait(tmp / "astronaut.png")
        audio = write_speech(tmp / "speech.wav", seconds, sr)
        out = {"scale": args.scale, "device": str(device),
               "device_name": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else None,
               "threads": torch.get_num_threads() if device == "cpu" else None,
               "model": {"resolution": cfg.resolution, "num_frames": cfg.num_frames,
                         "motion_frames": cfg.motion_frames, "block_out_channels": cfg.unet.block_out_channels,
                         "vae": any_pipe.codec.name, "decoder": any_pipe.decoder.name,
                         "audio": any_pipe.frontend.name,
                         "parameters_M": round(sum(p.numel() for p in next(iter(pipes.values())).net.parameters()) / 1e6,
                                               2)},
               "audio_seconds": seconds, "clips": args.clips, "build_seconds": round(build_s, 1),
               "compiled": bool(args.compile), "overlap": not args.sequential}
        variants, first_eps = [], None
        for dtype in dtypes:
            if dtype != next(iter(pipes.values())).dtype:  # the same nets, cast
                pipes = {m: FadaPipeline.from_net(p.net, p.spec, device=device, dtype=dtype, decoder=decoder)
                         for m, p in pipes.items()}
            for backend in backends:
                compile_s = {}
                for mode, p in pipes.items():
                    p.net.set_attention_backend(backend)
                    if args.compile:
                        p.compile()
                        compile_s[mode] = round(p.warm_up(portrait, mode=mode, steps=warm_steps(p, mode),
                                                          crop=not args.no_crop), 1)
                v = measure(pipes, portrait, audio, tmp, args.repeats, crop=not args.no_crop,
                            overlap=not args.sequential)
                if compile_s:
                    v["compile_seconds"] = compile_s
                if args.profile:
                    if "fast" not in pipes:
                        ap.error("--profile needs the fast mode")
                    v["profile_fast"] = profile_fast(pipes["fast"], portrait, audio, tmp, crop=not args.no_crop)
                eps = fast_step_eps(pipes["fast"]).float().cpu() if "fast" in pipes else torch.zeros(1)
                first_eps = eps if first_eps is None else first_eps
                v = {"dtype": str(dtype).replace("torch.", ""), "attention": any_pipe.net.attention_backend,
                     "max_abs_diff_vs_first": round(float((eps - first_eps).abs().max()), 5),
                     "eps_abs_mean": round(float(eps.abs().mean()), 5), **v}
                variants.append(v)
                print(json.dumps(v), file=sys.stderr, flush=True)  # each pair as it finishes
        out.update(variants[0])
        if len(variants) > 1:
            out["variants"] = variants
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
