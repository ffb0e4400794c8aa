"""Fixtures for the Hallo parity tests: the golden tensors and Hallo's net.pth rebuilt from its key list.

``data/`` is a copy of the golden set made by Hallo's own code (its README.md says how): ``golden.safetensors``,
``golden_meta.json``, ``net_keys.json`` (every key of Hallo's ``net.pth`` with its shape and fill), and a tiny
Hallo ``pretrained_models/`` folder without ``hallo/net.pth`` (``stable-diffusion-v1-5/unet/config.json``,
``sd-vae-ft-mse``); ``net.pth`` is rebuilt bit for bit from ``net_keys.json``.

``FADA_HALLO_GOLDEN=DIR`` runs the same tests on another folder of that layout (other widths, frame count, latent
size or seed; with or without ``pretrained_models/hallo/net.pth``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DATA = Path(__file__).parent / "data"


def golden_dir() -> Path:
    """The golden folder: ``$FADA_HALLO_GOLDEN`` when set, else the copy beside these tests."""
    return Path(os.environ.get("FADA_HALLO_GOLDEN") or DATA)


def hallo_pretrained(dest: Path) -> Path:
    """A Hallo ``pretrained_models/`` folder at ``dest`` from the golden folder: its own files, ``hallo/net.pth``
    (rebuilt from ``net_keys.json`` when the folder has none), and a wav2vec2 config (the goldens start from audio
    features; nothing reads wav2vec2's weights)."""
    src = golden_dir() / "pretrained_models"
    shutil.copytree(src, dest, dirs_exist_ok=True)
    net = dest / "hallo" / "net.pth"
    if not net.is_file():
        net.parent.mkdir(parents=True, exist_ok=True)
        torch.save(rebuild_net_state(golden_dir() / "net_keys.json"), net)
    w2v = dest / "wav2vec" / "wav2vec2-base-960h"
    w2v.mkdir(parents=True, exist_ok=True)
    (w2v / "config.json").write_text("{}")
    return dest


def rebuild_net_state(keys_file: Path) -> dict[str, torch.Tensor]:
    """Hallo's ``net.pth`` state dict, bit for bit, from ``net_keys.json`` and the README's weight rule."""
    meta = json.loads(keys_file.read_text())
    seed, out = int(meta["seed"]), {}
    for entry in meta["keys"]:
        key, shape = entry["key"], tuple(entry["shape"])
        if entry["fill"] == "buffer":  # AnimateDiff's sinusoidal table (1, max_len, d)
            n, d = shape[1], shape[2]
            pos = torch.arange(n).unsqueeze(1)
            div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
            pe = torch.zeros(1, n, d)
            pe[0, :, 0::2] = torch.sin(pos * div)
            pe[0, :, 1::2] = torch.cos(pos * div)
            out[key] = pe
            continue
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()) + seed)
        if key.endswith(".bias"):
            out[key] = (torch.rand(shape, generator=g) - 0.5) * 0.4
        elif len(shape) == 1:
            out[key] = torch.rand(shape, generator=g) * 0.8 + 0.4
        else:
            out[key] = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:])) * 0.5
    return out


@pytest.fixture(scope="session")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir() / "golden.safetensors"))


@pytest.fixture(scope="session")
def meta() -> dict:
    return json.loads((golden_dir() / "golden_meta.json").read_text())


@pytest.fixture(scope="session")
def net_pth(tmp_path_factory) -> Path:
    """Hallo's net.pth as Hallo's training saves it (torch.save of the Net state dict)."""
    given = golden_dir() / "pretrained_models" / "hallo" / "net.pth"
    if given.is_file():
        return given
    path = tmp_path_factory.mktemp("hallo") / "net.pth"
    torch.save(rebuild_net_state(golden_dir() / "net_keys.json"), path)
    return path


@pytest.fixture(scope="session")
def hallo_state(net_pth) -> dict[str, torch.Tensor]:
    return torch.load(net_pth, map_location="cpu", weights_only=True)


def build_hallo_avatar(meta: dict):
    from fada.models.hallo_keys import hallo_avatar

    kw = meta["unet_additional_kwargs"]
    ip, ap, fl = meta["image_proj"], meta["audio_proj"], meta["face_locator"]
    assert fl["conditioning_embedding_channels"] == meta["unet_config"]["block_out_channels"][0]
    unet = golden_dir() / "pretrained_models" / "stable-diffusion-v1-5" / "unet" / "config.json"
    return hallo_avatar(json.loads(unet.read_text()),
                        image_proj={k: ip[k] for k in ("clip_embeddings_dim", "clip_extra_context_tokens")},
                        audio_proj={k: v for k, v in ap.items()},
                        face_locator={k: fl[k] for k in ("conditioning_channels", "block_out_channels")},
                        motion_module=kw["motion_module_kwargs"], audio_dim=kw["audio_attention_dim"])


@pytest.fixture(scope="session")
def hallo_net(meta, net_pth):
    """fada's AvatarNet with Hallo's parts, filled from the rebuilt net.pth."""
    from fada.models.hallo_keys import load_hallo_checkpoint

    torch.manual_seed(0)
    net = build_hallo_avatar(meta)
    load_hallo_checkpoint(net, net_pth)
    return net.eval()
