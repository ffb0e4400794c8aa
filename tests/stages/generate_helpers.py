"""Tiny checkpoints, exported model folders and inputs shared by the generate/export/pipeline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fada.config import load_recipe, recipe_to_yaml

SR = 16000
FPS = 25
# Even smaller than the tiny recipes: 32x32 frames, 8 frames per clip, one attention level.
OVERRIDES = [
    "model.resolution=32", "model.num_frames=8", "model.motion_frames=2", "model.attention_backend=sdpa",
    "model.unet.block_out_channels=[16,32]", "model.unet.norm_num_groups=8",
    "model.unet.down_block_types=[DownBlock2D,CrossAttnDownBlock2D]",
    "model.unet.up_block_types=[CrossAttnUpBlock2D,UpBlock2D]", "model.unet.attention_head_dim=2",
    "model.unet.cross_attention_dim=32", "model.unet.temporal_heads=2", "model.unet.max_frames=16",
    "model.audio.n_mels=16", "model.audio.n_tokens=2", "model.audio.hidden_dim=32", "model.cfg.n_tokens=2",
]


def tiny_recipe(kind: str, extra: tuple = ()):
    """A resolved recipe for kind teacher | balanced | fast | rflow (``extra``: more overrides)."""
    if kind == "teacher":
        return load_recipe("tiny-teacher", OVERRIDES + list(extra), stage="teacher")
    name = "tiny-fast" if kind in ("fast", "rflow") else "tiny-balanced"
    more = [f"distill.variant={kind}"] + (["model.cfg.mode=none"] if kind == "rflow" else [])
    return load_recipe(name, OVERRIDES + more + list(extra), stage="distill")


def make_checkpoint(run_dir: Path, kind: str, step: int = 10, ema: bool = False, seed: int = 0,
                    extra: tuple = ()) -> Path:
    """A training checkpoint of a random tiny net (small random weights so outputs vary), as the stages write it."""
    from fada.models.avatar import build_avatar_net
    from fada.training.checkpoint import EMAWeights, save_checkpoint

    recipe = tiny_recipe(kind, extra)
    torch.manual_seed(seed)
    net = build_avatar_net(recipe.model, student=kind != "teacher")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ema_w = None
    if ema:
        ema_w = EMAWeights(net.named_parameters(), decay=0.5)
        with torch.no_grad():
            for t in ema_w.shadow.values():
                t.mul_(0.5)
    return save_checkpoint(run_dir, step, net, ema=ema_w, recipe_yaml=recipe_to_yaml(recipe),
                           extra={"kind": "teacher"} if kind == "teacher" else None)


def export_model(tmp: Path, kind: str, dtype: str = "fp32", ema: bool = True) -> Path:
    from fada.stages import export

    ckpt = make_checkpoint(tmp / f"run-{kind}", kind)
    return export.run(ckpt, tmp / f"model-{kind}-{dtype}", dtype=dtype, ema=ema)


def export_sd_model(tmp: Path, kind: str = "fast", decoder=None) -> Path:
    """A model folder whose codec is a tiny random SD VAE (4 channels, x8: TAESD's latent space), exported fp32
    (``decoder``: ``fada export --decoder``)."""
    from fada.stages import export
    from tests.fixtures import tiny_sd_vae

    sd = tiny_sd_vae(tmp / "sd15")
    ckpt = make_checkpoint(tmp / f"run-sd-{kind}", kind, extra=("model.vae.kind=sd", f"model.vae.path={sd}"))
    return export.run(ckpt, tmp / f"model-sd-{kind}", dtype="fp32", decoder=decoder)


def write_portrait(path: Path, image: np.ndarray | None = None) -> Path:
    import cv2
    from skimage import data

    img = data.astronaut() if image is None else image
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), img)
    return path


def speech(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Synthetic speech-like audio: voiced bursts at a syllable rate plus noise."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    env = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    sig = env * (0.3 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 300 * t))
    return (sig + 0.01 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32) * 0.8


def write_speech(path: Path, seconds: float, sr: int = SR) -> Path:
    from fada.data.media import write_wav

    return write_wav(path, speech(seconds, sr), sr)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict:
    """Exported folders: fast (fp16 on disk), balanced, teacher (fp32)."""
    tmp = tmp_path_factory.mktemp("models")
    return {"fast": export_model(tmp, "fast", "fp16"), "balanced": export_model(tmp, "balanced"),
            "teacher": export_model(tmp, "teacher")}


@pytest.fixture(scope="module")
def fast_pipe(models):
    """The exported tiny Fast model, loaded (the streaming tests' pipeline)."""
    from fada.pipeline import FadaPipeline

    return FadaPipeline.from_pretrained(models["fast"])


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("inputs")
    return {"portrait": write_portrait(tmp / "astronaut.png"), "audio": write_speech(tmp / "speech.wav", 3.3),
            "short": write_speech(tmp / "short.wav", 0.5), "dir": tmp}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """A private cache folder, no $FADA_MODEL, and one torch thread (the 2-core machine is shared: two
    threads per process oversubscribe it and make these tests several times slower)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FADA_MODEL", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
