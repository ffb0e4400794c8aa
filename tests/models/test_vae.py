"""Codecs: the weight-free pixel codec (exact) and the SD AutoencoderKL wrapper (tiny random VAE on disk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fada.config.model import VAEConfig
from fada.errors import FadaError, MissingFileError
from fada.models.vae import (
    PixelCodec,
    SDVAE,
    build_vae,
    flatten_video,
    frames_to_tensor,
    tensor_to_frames,
    unflatten_video,
)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_pixel_codec_exact_round_trip(factor):
    codec = build_vae(VAEConfig(kind="pixel", factor=factor))
    assert isinstance(codec, PixelCodec)
    assert codec.name == f"pixel-codec(x{factor})"
    assert codec.latent_channels == 3 * factor ** 2 and codec.downsample == factor
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 24, generator=g) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (3, 3 * factor ** 2, 16 // factor, 24 // factor)
    assert codec.latent_shape(16, 24) == tuple(z.shape[1:])
    assert torch.equal(codec.decode(z), x)


def test_pixel_codec_is_space_to_depth():
    codec = PixelCodec(2)
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(1, 3, 4, 4)
    z = codec.encode(x)
    # channel c*4 + (i*2 + j) holds pixel (2y+i, 2x+j) of colour c
    assert z[0, 0 * 4 + 1, 1, 0] == x[0, 0, 2, 1]
    assert z[0, 2 * 4 + 3, 0, 1] == x[0, 2, 1, 3]


def test_pixel_codec_rejects_bad_shapes():
    codec = PixelCodec(2)
    with pytest.raises(ValueError):
        codec.encode(torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError):
        codec.decode(torch.zeros(1, 3, 4, 4))


def test_frames_round_trip_uint8_and_video_helpers():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 4, 8, 8, 3), dtype=np.uint8)  # (B, F, H, W, 3)
    t = frames_to_tensor(frames)
    assert t.shape == (2, 4, 3, 8, 8) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert np.array_equal(tensor_to_frames(t), frames)
    assert frames_to_tensor(frames[0, 0]).shape == (3, 8, 8)

    codec = PixelCodec(2)
    z = codec.encode_video(t)
    assert z.shape == (2, 4, 12, 4, 4)
    assert torch.equal(codec.decode_video(z), t)
    flat, f = flatten_video(t)
    assert flat.shape == (8, 3, 8, 8) and f == 4
    assert torch.equal(unflatten_video(flat, f), t)
    assert np.array_equal(tensor_to_frames(codec.decode_video(z)), frames)


def test_tensor_to_frames_clamps():
    t = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 5).expand(3, 1, 5)
    out = tensor_to_frames(t)
    assert out.shape == (1, 5, 3)
    assert out[0, :, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1)
    root = tmp_path_factory.mktemp("sd15")
    vae.save_pretrained(root / "vae")
    return root, vae


def test_sd_vae_loads_and_scales(tiny_sd):
    root, ref = tiny_sd
    codec = build_vae(VAEConfig(kind="sd", path=str(root)), chunk=2)
    assert isinstance(codec, SDVAE)
    assert codec.latent_channels == 4 and codec.downsample == 2
    assert codec.name.startswith("sd-vae")
    assert not any(p.requires_grad for p in codec.vae.parameters()) and not codec.vae.training
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = codec.encode(x)  # 5 images through chunks of 2
    assert z.shape == (5, 4, 8, 8)
    with torch.no_grad():
        mean = ref.encode(x).latent_dist.mean
        assert torch.allclose(z, mean * 0.18215, atol=1e-5)
        assert torch.equal(codec.encode(x), z)  # posterior mean: deterministic
        img = codec.decode(z)
        assert img.shape == (5, 3, 16, 16)
        assert torch.allclose(img, ref.decode(mean).sample.clamp(-1, 1), atol=1e-5)
    s1 = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    s2 = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and not torch.equal(s1, z)
    v = codec.encode_video(x[:4].reshape(2, 2, 3, 16, 16))
    assert v.shape == (2, 2, 4, 8, 8)
    assert codec.decode_video(v).shape == (2, 2, 3, 16, 16)


def test_sd_vae_missing_folder(tmp_path):
    with pytest.raises(MissingFileError) as e:
        build_vae(VAEConfig(kind="sd", path=str(tmp_path / "nowhere")))
    assert str(tmp_path / "nowhere" / "vae" / "config.json") in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(FadaError):
        build_vae(VAEConfig(kind="sd", path=None))


def test_sd_vae_missing_weights(tiny_sd, tmp_path):
    root, _ = tiny_sd
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text((root / "vae" / "config.json").read_text())
    with pytest.raises(MissingFileError) as e:
        build_vae(VAEConfig(kind="sd", path=str(tmp_path)))
    assert "diffusion_pytorch_model" in str(e.value) and "\n" not in str(e.value)
