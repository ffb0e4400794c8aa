"""Streaming figures of a model: latency of a paced ``fada stream`` run, and the memory of a long session with
pauses and interruptions; prints one JSON object.

    python benchmarks/bench_stream.py --model fada-demo/models/fast             # both parts
    python benchmarks/bench_stream.py --model DIR --parts memory --minutes 10

``latency``: one clip's compute c (a session with no lookahead, one clip of audio pushed, the time to its first
frame; median of ``--repeats`` after a warm-up clip), then ``fada stream`` on ``--seconds`` of synthetic speech
pushed in 20 ms chunks at real-time pace into a fragmented mp4. The first frame cannot come before a clip of
audio plus the lookahead has arrived and been generated, so the bound it is held to is
F/fps + lookahead + 1.5 c; after it, a frame is late when it is ready after the player (started at the first
frame, running at the model's fps) needs it.

``memory``: one session, not paced, ``--minutes`` of output timeline: utterances of 4-20 s of synthetic speech pushed
in 20 ms chunks and ended, pauses of 1-8 s filled with idle frames, and every fourth utterance interrupted
half-way by ``clear()``. The process's resident set is sampled after every clip; growth = the peak after the first
minute over the peak within it, minus one. After each ``clear()`` the frames up to the first idle one are counted
(speech frames emitted after an interruption).

``lookahead``: how far a streamed wav2vec2 model's output is from the offline one. wav2vec2's attention lets every
feature read all the audio it is given, so a session's features (2 s of left context, exactly ``lookahead_ms`` of
right context) differ from ``fada generate``'s (blocks with 2 s of context on both sides). A tiny random Fast model on
a stand-in wav2vec2 (random weights, the base model's topology shrunk; ``fada.standins``) generates 8 s of
synthetic speech offline and streamed at each lookahead; reported: the features' relative L2 difference
||rows_stream - rows_offline|| / ||rows_offline|| over all clips, and the frames' mean absolute difference (uint8
levels) and PSNR against the offline frames. The log-mel front end's difference at its default lookahead is 0
(bit-identical, tested in tests/test_session.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> float:
    """Current resident set size in MiB (VmRSS)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def _speech(seconds: float, seed: int, sr: int) -> np.ndarray:
    from fada.data.synthetic import synth_speech

    return synth_speech(seconds, np.random.default_rng(seed), sr=sr)


def clip_compute(pipe, portrait, repeats: int) -> float:
    """Seconds from pushing one clip of audio (no lookahead) to its first frame: one clip denoised and decoded."""
    from fada.session import SessionFrame

    s = pipe.session(portrait, lookahead_ms=0)
    F, sr = s.num_frames, s.sample_rate
    clip = _speech(F / s.fps, 1, sr)[:-(-F * sr // s.fps)]
    times = []
    for k in range(repeats + 1):  # the first clip warms caches up and is not counted
        s.push_audio(clip, sr)
        t = time.perf_counter()
        first = next(s)
        took = time.perf_counter() - t
        assert isinstance(first, SessionFrame)
        list(s)  # the rest of the clip's frames, already decoded
        if k:
            times.append(took)
    return statistics.median(times)


def latency(model: Path, portrait: Path, seconds: float, repeats: int, compile: bool, buffer_ms: float,
            chunk_ms: float) -> dict:
    from fada.data.media import write_wav
    from fada.pipeline import FadaPipeline
    from fada.stages import stream

    pipe = FadaPipeline.from_pretrained(model)
    if compile:
        pipe.compile()
        pipe.warm_up(portrait)
    probe = pipe.session(portrait)  # the default lookahead, as `fada stream` uses it
    look, clip_s = probe.lookahead_samples / probe.sample_rate, probe.num_frames / probe.fps
    c = clip_compute(pipe, portrait, repeats)
    del pipe, probe
    with tempfile.TemporaryDirectory() as tmp:
        wav = write_wav(Path(tmp) / "speech.wav", _speech(seconds, 0, 16000), 16000)
        res = stream.run(portrait, wav, model=model, out=Path(tmp) / "stream.mp4", pace=True, compile=compile,
                         buffer_ms=buffer_ms, chunk_ms=chunk_ms)
    bound = clip_s + look + 1.5 * c
    return {"clip_seconds": clip_s, "lookahead_seconds": round(look, 4), "clip_compute_seconds": round(c, 4),
            "clip_compute_over_clip": round(c / clip_s, 3), "audio_seconds": res.audio_seconds,
            "compiled": compile, "buffer_ms": buffer_ms, "chunk_ms": chunk_ms,
            "first_frame_latency": round(res.first_frame_latency, 4), "first_frame_shown": round(res.playout_delay, 4),
            "first_frame_bound": round(bound, 4), "first_frame_within_bound": res.playout_delay <= bound, "late_frames": res.late_frames,
            "max_lateness": round(res.max_lateness, 4), "realtime_factor": round(res.realtime_factor, 3),
            "frames": res.frames}


def memory(model: Path, portrait: Path, minutes: float, seed: int) -> dict:
    from fada.pipeline import FadaPipeline
    from fada.session import SegmentEnd, SessionFrame

    pipe = FadaPipeline.from_pretrained(model)
    s = pipe.session(portrait, idle=True, seed=seed)
    sr, fps, F = s.sample_rate, s.fps, s.num_frames
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * fps)
    chunk = sr // 50
    samples = []          # (output frame index, rss MiB)
    speech_after_clear = []
    frames = idle = utterances = clears = 0
    last_sample = -F
    t0 = time.perf_counter()

    def take(items):
        nonlocal frames, idle, last_sample
        for it in items:
            if isinstance(it, SessionFrame):
                frames += 1
                idle += it.idle
                if frames - last_sample >= F:
                    samples.append((frames, _rss_mb()))
                    last_sample = frames

    while frames < total:
        utterances += 1
        audio = _speech(float(rng.uniform(4, 20)), int(rng.integers(1 << 30)), sr)
        interrupt = utterances % 4 == 0
        stop_at = len(audio) // 2 if interrupt else len(audio)
        for i in range(0, stop_at, chunk):
            s.push_audio(audio[i:i + chunk], sr)
            take(s)
        if interrupt:
            clears += 1
            s.clear()
            n = 0
            for it in s.idle_frames():  # nothing of the cleared speech may come out
                if isinstance(it, SessionFrame):
                    if it.idle:
                        take([it])
                        break
                    n += 1
            speech_after_clear.append(n)
        else:
            s.end_segment()
            for it in s:
                take([it])
                if isinstance(it, SegmentEnd):
                    break
        take(s.idle_frames(max_frames=int(rng.uniform(1, 8) * fps)))
        print(f"  {frames / fps / 60:5.2f} min of {minutes} ({time.perf_counter() - t0:.0f} s), rss "
              f"{samples[-1][1] if samples else 0:.0f} MiB", file=sys.stderr, flush=True)
    s.close()
    first = [m for f, m in samples if f <= 60 * fps]
    after = [m for f, m in samples if f > 60 * fps]
    growth = max(after) / max(first) - 1 if first and after else float("nan")
    return {"minutes": round(frames / fps / 60, 2), "frames": frames, "idle_frames": idle, "utterances": utterances,
            "clears": clears, "speech_frames_after_clear": max(speech_after_clear, default=0),
            "rss_peak_first_minute_mb": round(max(first), 1), "rss_peak_after_mb": round(max(after), 1) if after
            else None, "rss_growth_after_first_minute": round(growth, 4),
            "buffered_samples_at_end": s.buffered_samples, "wall_seconds": round(time.perf_counter() - t0, 1),
            "rss_by_minute_mb": [round(max(m for f, m in samples if k * 60 * fps < f <= (k + 1) * 60 * fps), 1)
                                 for k in range(int(np.ceil(frames / fps / 60)))
                                 if any(k * 60 * fps < f <= (k + 1) * 60 * fps for f, _ in samples)]}


def _w2v_model(root: Path, small: bool) -> Path:
    """A random tiny Fast student on a stand-in wav2vec2, exported as `fada export` writes it."""
    import torch

    from fada.config import load_recipe, recipe_to_yaml
    from fada.models.avatar import build_avatar_net
    from fada.stages import export
    from fada.standins import write_wav2vec2
    from fada.training.checkpoint import save_checkpoint

    w2v = write_wav2vec2(root / "wav2vec2", small=small)
    recipe = load_recipe("tiny-fast", ["model.resolution=32", "model.audio.kind=wav2vec2",
                                       f"model.audio.path={w2v}"], stage="distill")
    from fada.models.audio import build_audio_frontend

    torch.manual_seed(0)
    shape = build_audio_frontend(recipe.model.audio).feature_shape
    net = build_avatar_net(recipe.model, student=True, audio_feature_shape=shape)
    with torch.no_grad():
        for p in net.parameters():  # a random net whose output depends on its audio input
            p.add_(0.02 * torch.randn_like(p))
    ckpt = save_checkpoint(root / "run", 1, net, recipe_yaml=recipe_to_yaml(recipe))
    return export.run(ckpt, root / "model")


def lookahead(portrait: Path, seconds: float, values_ms: list, small: bool) -> dict:
    import torch

    from fada.pipeline import FadaPipeline
    from fada.session import SessionFrame

    with tempfile.TemporaryDirectory() as tmp:
        pipe = FadaPipeline.from_pretrained(_w2v_model(Path(tmp), small))
    rows, real = [], pipe.denoise_clip

    def recording(plan, bank, feats, *a, **k):
        rows.append(feats.detach().float().cpu().clone())
        return real(plan, bank, feats, *a, **k)

    pipe.denoise_clip = recording
    sr = pipe.frontend.sample_rate
    wav = _speech(seconds, 0, sr)
    offline = np.concatenate(list(pipe.generate_frames(portrait, wav, seed=0, overlap=False)))
    ref_rows = torch.cat(rows)
    out = []
    for ms in values_ms:
        rows.clear()
        s = pipe.session(portrait, lookahead_ms=None if ms == "default" else float(ms), seed=0)
        frames = []
        for i in range(0, len(wav), sr // 50):
            s.push_audio(wav[i:i + sr // 50], sr)
            frames += [f.image for f in s if isinstance(f, SessionFrame)]
        s.end_segment()
        frames += [f.image for f in s if isinstance(f, SessionFrame)]
        got = np.stack(frames).astype(np.float64)
        diff = np.abs(got - offline.astype(np.float64))
        mse = float((diff ** 2).mean())
        feat = float((torch.cat(rows) - ref_rows).norm() / ref_rows.norm())
        out.append({"lookahead_ms": round(s.lookahead_samples * 1000 / sr, 1) if ms == "default" else float(ms),
                    "default": ms == "default", "feature_rel_l2": round(feat, 4),
                    "frame_mean_abs_diff": round(float(diff.mean()), 3),
                    "frame_psnr_db": round(10 * np.log10(255.0 ** 2 / mse), 2) if mse > 0 else float("inf")})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return {"seconds": seconds, "frames": len(offline), "rows": out}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="an exported model folder (e.g. the demo's Fast): the latency and memory parts")
    ap.add_argument("--portrait", type=Path, default=None, help="portrait image (default: scikit-image's astronaut)")
    ap.add_argument("--parts", default="latency,memory", help="any of latency, memory, lookahead")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio streamed in the latency part")
    ap.add_argument("--repeats", type=int, default=5, help="clips timed for one clip's compute")
    ap.add_argument("--minutes", type=float, default=10.0, help="output timeline of the memory part")
    ap.add_argument("--lookaheads", default="0,40,default,250,500,1000,2000",
                    help="lookaheads (ms, or 'default') of the lookahead part")
    ap.add_argument("--full-wav2vec2", action="store_true",
                    help="the lookahead part's stand-in wav2vec2 at the base model's full size (slow)")
    ap.add_argument("--compile", action="store_true", help="latency: fada stream --compile (and c compiled)")
    ap.add_argument("--buffer-ms", type=float, default=0.0, help="latency: fada stream --buffer-ms")
    ap.add_argument("--chunk-ms", type=float, default=20.0, help="latency: audio pushed in chunks of this length")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = {"model": str(args.model), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        portrait = args.portrait
        if portrait is None:
            import cv2
            from skimage import data

            portrait = Path(tmp) / "astronaut.png"
            cv2.imwrite(str(portrait), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
        parts = args.parts.split(",")
        if {"latency", "memory"} & set(parts) and args.model is None:
            ap.error("--model DIR is needed for the latency and memory parts")
        if "latency" in parts:
            out["latency"] = latency(args.model, portrait, args.seconds, args.repeats, args.compile, args.buffer_ms,
                                     args.chunk_ms)
            print(json.dumps(out["latency"]), file=sys.stderr, flush=True)
        if "memory" in parts:
            out["memory"] = memory(args.model, portrait, args.minutes, args.seed)
        if "lookahead" in parts:
            values = [v if v == "default" else float(v) for v in args.lookaheads.split(",")]
            out["lookahead"] = lookahead(portrait, 8.0, values, small=not args.full_wav2vec2)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
