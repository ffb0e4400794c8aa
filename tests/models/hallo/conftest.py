"""Fixtures for the Hallo parity tests: the golden tensors and Hallo's net.pth rebuilt from its key list.

``data/`` is a copy of the shared golden set (its README.md says how it was made): ``golden.safetensors``,
``golden_meta.json``, ``net_keys.json`` (every key of Hallo's ``net.pth`` with its shape and fill), and the tiny
SD folder (``sd/unet/config.json``, ``sd/vae``; the README's ``pretrained_models/stable-diffusion-v1-5`` and
``sd-vae-ft-mse``).
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DATA = Path(__file__).parent / "data"


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
    return load_file(str(DATA / "golden.safetensors"))


@pytest.fixture(scope="session")
def meta() -> dict:
    return json.loads((DATA / "golden_meta.json").read_text())


@pytest.fixture(scope="session")
def net_pth(tmp_path_factory) -> Path:
    """Hallo's net.pth as Hallo's training saves it (torch.save of the Net state dict)."""
    path = tmp_path_factory.mktemp("hallo") / "net.pth"
    torch.save(rebuild_net_state(DATA / "net_keys.json"), path)
    return path


@pytest.fixture(scope="session")
def hallo_state(net_pth) -> dict[str, torch.Tensor]:
    return torch.load(net_pth, map_location="cpu", weights_only=True)


def build_hallo_avatar(meta: dict):
    from fada.models.hallo_keys import hallo_avatar

    kw = meta["unet_additional_kwargs"]
    ip, ap, fl = meta["image_proj"], meta["audio_proj"], meta["face_locator"]
    assert fl["conditioning_embedding_channels"] == meta["unet_config"]["block_out_channels"][0]
    return hallo_avatar(json.loads((DATA / "sd" / "unet" / "config.json").read_text()),
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
