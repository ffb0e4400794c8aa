"""Peak memory of ``fada generate`` against audio length; prints one JSON object.

    python benchmarks/bench_memory.py                      # 10 s and 600 s of audio, Fast mode, tiny model

Each length runs in a fresh child process (the audio files are written beforehand by this parent, so making
them costs the child nothing); a child builds the model, warms up on one clip, then generates the whole audio into
an mp4 and reports its peak resident set size (VmHWM). Generation streams frames to the file and computes
audio features block by block, so only the waveform itself (4 bytes per sample, held twice: once for the
features, once by the muxer) grows with the length.

The model is a tiny Fast student (16x16 frames, 24 frames per clip, 4 PeRFlow steps) so that 10 minutes of video
(15000 frames) take about a minute on one core; memory behaviour does not depend on the model's size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB: VmHWM (it starts afresh at exec, unlike
    ru_maxrss, which keeps the high-water mark of the parent image the child was forked from)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def memory_model_config():
    from fada.config.model import AudioConfig, CFGConfig, ModelConfig, UNetConfig, VAEConfig

    return ModelConfig(
        resolution=16, fps=25, num_frames=24, motion_frames=2, attention_backend="sdpa",
        vae=VAEConfig(kind="pixel", factor=2),
        unet=UNetConfig(block_out_channels=[16, 32], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
                        attention_head_dim=2, cross_attention_dim=32, norm_num_groups=8, temporal_heads=2,
                        max_frames=32),
        audio=AudioConfig(kind="mel", n_mels=16, window=2, n_tokens=2, hidden_dim=32),
        cfg=CFGConfig(mode="tokens", n_tokens=2))


def child(portrait: str, audio: str, warm: str, out: str, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from fada.export import spec_for
    from fada.models.avatar import build_avatar_net
    from fada.pipeline import FadaPipeline

    torch.manual_seed(0)
    cfg = memory_model_config()
    net = build_avatar_net(cfg, student=True).eval()
    pipe = FadaPipeline.from_net(net, spec_for(net, cfg, "fast", steps=steps, num_windows=4), device="cpu")
    pipe(portrait, warm, out=out, progress=False)
    before = _rss_mb()
    t0 = time.perf_counter()
    res = pipe(portrait, audio, out=out, progress=False)
    return {"rss_before_mb": round(before, 1), "peak_rss_mb": round(_rss_mb(), 1),
            "wall_seconds": round(time.perf_counter() - t0, 1), "frames": res.frames, "clips": res.clips,
            "audio_seconds": round(res.audio_seconds, 2), "nfe_per_clip": res.nfe_per_clip}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 600.0], help="audio lengths to compare")
    ap.add_argument("--steps", type=int, default=4, help="PeRFlow steps (>= 4 windows)")
    ap.add_argument("--child", nargs=4, metavar=("PORTRAIT", "AUDIO", "WARM", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, steps=args.steps)))
        return {}

    from bench_generate import write_portrait, write_speech

    out: dict = {"model": "tiny Fast student, 16x16, 24 frames/clip", "steps": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        portrait = write_portrait(tmp / "astronaut.png")
        warm = write_speech(tmp / "warm.wav", 1.0)
        for s in args.seconds:
            audio = write_speech(tmp / f"speech_{s:g}.wav", s)
            cmd = [sys.executable, __file__, "--steps", str(args.steps), "--child", str(portrait), str(audio),
                   str(warm), str(tmp / "out.mp4")]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                raise SystemExit(f"child for {s:g} s failed:\n{res.stderr[-2000:]}")
            out["runs"][f"{s:g}s"] = json.loads(res.stdout.strip().splitlines()[-1])
            audio.unlink()
    runs = list(out["runs"].values())
    out["peak_ratio_longest_to_shortest"] = round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3)
    out["growth_during_generation_mb"] = {k: round(r["peak_rss_mb"] - r["rss_before_mb"], 1)
                                          for k, r in out["runs"].items()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
