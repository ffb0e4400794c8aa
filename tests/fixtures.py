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


class FakeFaceAnalysis:
    """Stands in for ``fada.data.face_analysis.HalloFaceAnalysis`` (InsightFace + MediaPipe, whose files a test
    machine does not have): fabricated detector outputs for the face in the middle of the image, put through the
    real ``build_conditions``. The embedding comes from the image's pixels, so portraits differ."""

    calls = 0

    def __init__(self, models_dir):
        self.models_dir = models_dir

    def __call__(self, image, size=512, face_expand_ratio=1.2):
        import cv2

        from fada.data.face_conditions import LIP_IDS, SILHOUETTE_IDS, build_conditions

        FakeFaceAnalysis.calls += 1
        h, w = image.shape[:2]
        rng = np.random.default_rng(0)
        lm = np.stack([rng.uniform(0.35 * w, 0.65 * w, 478), rng.uniform(0.3 * h, 0.7 * h, 478)], 1)
        ang = np.linspace(0, 2 * np.pi, len(SILHOUETTE_IDS), endpoint=False)
        lm[list(SILHOUETTE_IDS)] = np.stack([w * (0.5 + 0.25 * np.cos(ang)), h * (0.5 + 0.32 * np.sin(ang))], 1)
        ang = np.linspace(0, 2 * np.pi, len(LIP_IDS), endpoint=False)
        lm[list(LIP_IDS)] = np.stack([w * (0.5 + 0.08 * np.cos(ang)), h * (0.7 + 0.03 * np.sin(ang))], 1)
        emb = cv2.resize(image, (16, 11), interpolation=cv2.INTER_AREA).reshape(-1)[:512].astype(np.float32) / 64.0
        faces = [{"bbox": (0.25 * w, 0.18 * h, 0.75 * w, 0.85 * h), "embedding": emb}]
        return build_conditions(faces, lm, h, w, size=size, face_expand_ratio=face_expand_ratio)

    def close(self):
        pass


def tiny_hallo_wav2vec2(folder: Path) -> Path:
    """A random wav2vec2 shaped as Hallo's audio projection reads it (12 hidden states of 768), otherwise as small
    as it gets (2-layer CNN, 16-wide feed-forward; ~31M parameters)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=2, intermediate_size=16,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2,
                         num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder


def tiny_sd_vae(sd_root: Path, stages: int = 4) -> Path:
    """A random SD-style AutoencoderKL in ``sd_root/vae`` (diffusers layout, safetensors): 4 latent channels,
    downsampling 2**(stages-1) (x8 like SD1.5 with the default 4), 8 channels wide."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8,) * stages, down_block_types=("DownEncoderBlock2D",) * stages,
                  up_block_types=("UpDecoderBlock2D",) * stages, layers_per_block=1, norm_num_groups=4,
                  latent_channels=4).save_pretrained(str(sd_root / "vae"), safe_serialization=True)
    return sd_root


def tiny_taesd(folder: Path, latent_channels: int = 4, stages: int = 4, seed: int = 0) -> Path:
    """A random TAESD (diffusers AutoencoderTiny) in ``folder``: config.json + diffusion_pytorch_model.safetensors,
    upsampling 2**(stages-1), one block of 8 channels per stage."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    AutoencoderTiny(encoder_block_out_channels=(8,) * stages, decoder_block_out_channels=(8,) * stages,
                    num_encoder_blocks=(1,) * stages, num_decoder_blocks=(1,) * stages,
                    latent_channels=latent_channels).save_pretrained(str(folder), safe_serialization=True)
    return folder
