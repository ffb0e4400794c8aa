"""`fada import hallo`: Hallo's published teacher as an ordinary fada model folder.

Reads the user's Hallo ``pretrained_models/`` folder (github.com/fudan-generative-vision/hallo, its README's layout)::

    hallo/net.pth                              the trained Net (reference UNet, denoising UNet with audio and
                                               motion modules, face locator, image and audio projections)
    stable-diffusion-v1-5/unet/config.json     the UNet's shape (its weights are all in net.pth)
    sd-vae-ft-mse/                             the VAE (config.json + safetensors), copied into the folder
    wav2vec/wav2vec2-base-960h/                wav2vec2 (copied, or referenced with --link-models)
    face_analysis/models/                      InsightFace + MediaPipe files for the per-portrait conditions;
                                               referenced by path (their own non-commercial terms), optional here

``net.pth`` is read with ``torch.load(weights_only=True)`` (tensors only; no code runs) and only here. Every key is
mapped to fada's parts (``fada.models.hallo_keys``) or ignored with a reason, and both counts are printed. The
folder samples with Hallo's own protocol by default: v-prediction on a zero-terminal-SNR schedule, 40 trailing
DDIM steps, guidance 3.5 over two branches (80 NFE per clip); ``fada generate``, ``fada distill``, ``fada eval``
and ``fada app`` read it like any exported teacher.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

from fada.errors import FadaError, MissingFileError

NET = "hallo/net.pth"
UNET_CONFIG = "stable-diffusion-v1-5/unet/config.json"
VAE = "sd-vae-ft-mse"
WAV2VEC = "wav2vec/wav2vec2-base-960h"
FACE_ANALYSIS = "face_analysis/models"
# scripts/inference.py and configs/inference/default.yaml
HALLO_STEPS, HALLO_CFG = 40, 3.5
HALLO_AUDIO = {"seq_len": 5, "channels": 768}  # AudioProjModel: a ±2 window over wav2vec2's 768-wide states


def shapes_from_state(state: dict, cross_attention_dim: int) -> dict:
    """The projection and face-locator shapes a ``net.pth`` was trained with (read off its tensors; the motion
    modules' heads are not in any shape and keep Hallo's 8)."""
    try:
        p1, p3 = state["audioproj.proj1.weight"], state["audioproj.proj3.weight"]
        out_dim = int(state["audioproj.norm.weight"].shape[0])
        blocks = int(p1.shape[1]) // (HALLO_AUDIO["seq_len"] * HALLO_AUDIO["channels"])
        audio = {**HALLO_AUDIO, "blocks": blocks, "intermediate_dim": int(p1.shape[0]), "output_dim": out_dim,
                 "context_tokens": int(p3.shape[0]) // out_dim}
        ip = state["imageproj.proj.weight"]
        image = {"clip_embeddings_dim": int(ip.shape[1]),
                 "clip_extra_context_tokens": int(ip.shape[0]) // cross_attention_dim}
        conv_in = state["face_locator.conv_in.weight"]
        n_blocks = len({k.split(".")[2] for k in state if k.startswith("face_locator.blocks.")})
        widths = [int(conv_in.shape[0])] + [int(state[f"face_locator.blocks.{2 * i + 1}.weight"].shape[0])
                                            for i in range(n_blocks // 2)]
        face = {"conditioning_channels": int(conv_in.shape[1]), "block_out_channels": widths}
        pe = next(v for k, v in state.items() if k.endswith(".pos_encoder.pe"))
        motion = {"num_attention_heads": 8, "temporal_position_encoding_max_len": int(pe.shape[1])}
        audio_dim = int(next(v for k, v in state.items() if k.startswith("denoising_unet.")
                             and ".audio_modules." in k and k.endswith("attn2_0.to_k.weight")).shape[1])
    except (KeyError, StopIteration) as e:
        raise FadaError(f"{NET}: not Hallo's Net state dict (no {e})") from None
    return {"audio_proj": audio, "image_proj": image, "face_locator": face, "motion_module": motion,
            "audio_dim": audio_dim}


def _require(root: Path, rel: str, what: str) -> Path:
    path = root / rel
    if not path.exists():
        raise MissingFileError(path, what, f"expected in Hallo's pretrained_models layout under {root}")
    return path


def run(pretrained_dir, out, dtype: str = "fp16", copy_models: bool = True, resolution: int = 512,
        num_frames: int = 16, motion_frames: int = 2, fps: int = 25, face_analysis: Optional[str] = None,
        log=print) -> Path:
    """Import Hallo's teacher from ``pretrained_dir`` into the model folder ``out``; returns ``out``."""
    import json

    import torch

    from fada.config.model import (AudioConfig, CFGConfig, ConditionsConfig, ModelConfig, ScheduleConfig,
                                   UNetConfig, VAEConfig)
    from fada.export import DTYPES, write_model_folder
    from fada.models.hallo_keys import HALLO_SCHEDULE, hallo_avatar, load_hallo_checkpoint

    if dtype not in DTYPES:
        raise FadaError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    root = Path(pretrained_dir).expanduser().resolve()
    if not root.is_dir():
        raise MissingFileError(root, "Hallo pretrained_models folder")
    net_file = _require(root, NET, "Hallo checkpoint")
    unet_file = _require(root, UNET_CONFIG, "SD1.5 UNet config")
    vae_dir = _require(root, VAE, "SD VAE folder")
    wav_dir = _require(root, WAV2VEC, "wav2vec2 folder")
    fa = Path(face_analysis).expanduser().resolve() if face_analysis else root / FACE_ANALYSIS
    if not fa.is_dir():
        log(f"note: {fa} is missing; `fada generate` needs it (InsightFace + MediaPipe files, extra [hallo]) "
            f"to compute each portrait's conditions")
    try:
        unet_config = json.loads(unet_file.read_text())
    except ValueError as e:
        raise FadaError(f"{unet_file}: not readable JSON ({e})") from None
    if resolution % 64:
        raise FadaError(f"--resolution {resolution}: must be a multiple of 64 (the region masks' smallest level)")
    try:
        state = torch.load(str(net_file), map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, or a pickle that holds more than tensors
        raise FadaError(f"{net_file}: not a readable Hallo checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise FadaError(f"{net_file}: expected a state dict, found {type(state).__name__}")
    shapes = shapes_from_state(state, int(unet_config["cross_attention_dim"]))
    net = hallo_avatar(unet_config, image_proj=shapes["image_proj"], audio_proj=shapes["audio_proj"],
                       face_locator=shapes["face_locator"], motion_module=shapes["motion_module"],
                       audio_dim=shapes["audio_dim"], schedule=HALLO_SCHEDULE)
    ignored = load_hallo_checkpoint(net, state)
    mapped = len(state) - len(ignored)
    ap = shapes["audio_proj"]
    model_cfg = ModelConfig(
        resolution=int(resolution), fps=int(fps), num_frames=int(num_frames), motion_frames=int(motion_frames),
        vae=VAEConfig(kind="sd", path=str(vae_dir)),
        unet=UNetConfig(cross_attention_dim=int(unet_config["cross_attention_dim"])),
        audio=AudioConfig(kind="wav2vec2", path=str(wav_dir), window=(ap["seq_len"] - 1) // 2,
                          n_tokens=ap["context_tokens"], hidden_dim=ap["intermediate_dim"],
                          wav2vec2_mode="hallo", hallo_clip_frames=int(num_frames)),
        cfg=CFGConfig(mode="none", guidance=[HALLO_CFG, HALLO_CFG]),
        schedule=ScheduleConfig(**HALLO_SCHEDULE.to_dict()),
        conditions=ConditionsConfig(kind="hallo", face_analysis=str(fa)))
    source = {"imported": "hallo", "checkpoint": str(net_file), "keys_mapped": mapped,
              "keys_ignored": dict(Counter(ignored.values()))}
    out = write_model_folder(out, net.eval(), model_cfg, kind="teacher", variant="hallo", steps=HALLO_STEPS,
                             dtype=dtype, copy_audio=copy_models, source=source, log=log, vae_folder=vae_dir)
    log(f"imported {net_file}: {len(state)} keys, {mapped} mapped, {len(ignored)} ignored with a reason "
        f"({'; '.join(f'{n}: {r}' for r, n in Counter(ignored.values()).items())})")
    n = sum(p.numel() for p in net.parameters())
    log(f"wrote {out} (Hallo teacher, {n / 1e6:.1f}M parameters, {dtype}): DDIM {HALLO_STEPS} trailing steps, "
        f"v-prediction, guidance {HALLO_CFG} over two branches ({2 * HALLO_STEPS} NFE per clip) by default")
    return out
