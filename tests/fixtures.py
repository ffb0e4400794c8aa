"""Small synthetic data shared by stage tests: a curated-style manifest of rendered talking clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_manifest(folder: Path, n_clips: int = 4, seconds: float = 1.2, size: int = 64, seed: int = 0,
                  head_motion: bool = True) -> Path:
    """Render ``n_clips`` synthetic talking clips (mp4 + wav) and a manifest listing them as curate would
    (``head_motion`` False: the mouth is the only motion, see ``render_clip``)."""
    from fada.data.media import write_video, write_wav
    from fada.data.synthetic import render_clip, sample_identity, synth_speech

    rng = np.random.default_rng(seed)
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_clips):
        ident = sample_identity(rng, detectable=False)
        audio = synth_speech(seconds, rng)
        frames = render_clip(ident, audio, size=size, seed=i, head_motion=head_motion)
        write_video(clips / f"c{i}.mp4", frames, 25, audio=audio, threads=1)
        write_wav(clips / f"c{i}.wav", audio)
        rows.append({"id": f"c{i}", "video": f"clips/c{i}.mp4", "wav": f"clips/c{i}.wav", "in_A": True, "in_B": True})
    manifest = folder / "A.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


# A model small enough for stage tests (seconds, not minutes, on 2 cores).
TINY_TEST_MODEL = [
    "model.resolution=32", "model.num_frames=4", "model.motion_frames=1",
    "model.unet.block_out_channels=[16,32]", "model.unet.norm_num_groups=8",
    "model.unet.down_block_types=[DownBlock2D,CrossAttnDownBlock2D]",
    "model.unet.up_block_types=[CrossAttnUpBlock2D,UpBlock2D]",
    "model.unet.attention_head_dim=2", "model.unet.cross_attention_dim=16", "model.unet.temporal_heads=2",
    "model.audio.n_mels=16", "model.audio.n_tokens=2", "model.audio.hidden_dim=16",
]
