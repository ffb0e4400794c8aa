"""TAESD as a decoder: diffusers' AutoencoderTiny (tiny random one on disk) behind the codec interface."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fada.errors import FadaError, MissingFileError
from fada.models.taesd import TinyDecoder, load_decoder, parse_decoder
from fada.models.vae import PixelCodec
from tests.fixtures import tiny_taesd


@pytest.fixture(scope="module")
def taesd(tmp_path_factory):
    return tiny_taesd(tmp_path_factory.mktemp("taesd"))


class _Codec(PixelCodec):
    """Stands in for the SD VAE where only its geometry matters (4 channels, x8)."""

    def __init__(self, channels=4, downsample=8):
        super().__init__(1)
        self.latent_channels, self.downsample, self.name = channels, downsample, f"sd-vae(x{downsample}, 4ch)"


def _spec(tmp_path, own=None):
    return SimpleNamespace(root=tmp_path, decoder={"kind": "taesd", "path": str(own)} if own else {})


def test_decode_equals_diffusers_own(taesd):
    from diffusers import AutoencoderTiny

    ref = AutoencoderTiny.from_pretrained(str(taesd)).eval()  # loaded independently, encoder kept
    dec = TinyDecoder(taesd, chunk=2)
    assert dec.name == "taesd(x8, 4ch)" and (dec.latent_channels, dec.downsample) == (4, 8)
    assert dec.vae.encoder is None and not dec.vae.training
    assert not any(p.requires_grad for p in dec.vae.parameters())
    z = 4 * torch.randn(5, 4, 3, 2, generator=torch.Generator().manual_seed(1))  # 5 latents through chunks of 2
    out = dec.decode(z)
    with torch.no_grad():
        raw = ref.decode(z).sample
    assert out.shape == (5, 3, 24, 16) and out.dtype == torch.float32
    assert raw.min() < -1 or raw.max() > 1  # the clamp matters: TAESD's output is unbounded
    assert out.min() >= -1 and out.max() <= 1
    assert torch.allclose(out, raw.clamp(-1, 1), atol=1e-5)
    assert dec.decode(z.double()).dtype == torch.float64
    video = dec.decode_video(z[:4].reshape(2, 2, 4, 3, 2))
    assert video.shape == (2, 2, 3, 24, 16) and torch.allclose(video.reshape(4, 3, 24, 16), out[:4], atol=1e-6)


def test_half_precision_returns_the_input_dtype(taesd):
    dec = TinyDecoder(taesd).to(dtype=torch.bfloat16)
    assert dec.dtype == torch.bfloat16 and next(dec.vae.parameters()).dtype == torch.bfloat16
    out = dec.decode(torch.randn(2, 4, 2, 2))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 16, 16)


def test_decode_only(taesd):
    with pytest.raises(FadaError, match="only decodes"):
        TinyDecoder(taesd).encode(torch.zeros(1, 3, 16, 16))


def _one_line(e):
    assert "\n" not in str(e)
    return str(e)


def test_missing_files_are_named(taesd, tmp_path):
    with pytest.raises(MissingFileError, match="TAESD decoder config not found: .*nowhere/config.json") as e:
        TinyDecoder(tmp_path / "nowhere")
    _one_line(e.value)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((taesd / "config.json").read_text())
    (half / "diffusion_pytorch_model.bin").write_bytes(b"pickled")  # never loaded
    with pytest.raises(MissingFileError, match="TAESD decoder weights not found: .*half/diffusion_pytorch_model"
                                               r"\.safetensors") as e:
        TinyDecoder(half)
    _one_line(e.value)
    (half / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(FadaError, match="cannot load the TAESD decoder from .*half") as e:
        TinyDecoder(half)
    _one_line(e.value)


def test_geometry_is_checked_against_the_codec(taesd, tmp_path):
    wide = tiny_taesd(tmp_path / "wide", latent_channels=8)
    with pytest.raises(FadaError, match=r"wide/config.json: TAESD decodes 8 latent channels at x8, the model's "
                                        r"codec sd-vae\(x8, 4ch\) makes 4 channels at x8") as e:
        load_decoder(f"taesd:{wide}", _spec(tmp_path), _Codec())
    _one_line(e.value)
    x4 = tiny_taesd(tmp_path / "x4", stages=3)
    with pytest.raises(FadaError, match=r"x4/config.json: TAESD decodes 4 latent channels at x4"):
        load_decoder(f"taesd:{x4}", _spec(tmp_path), _Codec())
    with pytest.raises(FadaError, match="pixel-codec"):  # fada's CPU-scale codec is not the SD VAE's latent space
        load_decoder(f"taesd:{taesd}", _spec(tmp_path), PixelCodec(2))
    assert load_decoder(f"taesd:{x4}", _spec(tmp_path), _Codec(downsample=4)).downsample == 4


def test_parse_decoder_forms(tmp_path):
    assert parse_decoder("sd") == ("sd", None)
    assert parse_decoder("taesd") == ("taesd", None)
    assert parse_decoder(f"taesd:{tmp_path}") == ("taesd", tmp_path)
    assert parse_decoder("taesd:~/x")[1].parts[-1] == "x" and "~" not in str(parse_decoder("taesd:~/x")[1])
    for bad in ("", "vae", "taesd:", "taesd: ", "TAESD", "sd:/x", "tiny"):
        with pytest.raises(FadaError, match=r"--decoder .*choose sd .*taesd .*taesd:PATH"):
            parse_decoder(bad)


def test_load_decoder_choices(taesd, tmp_path):
    codec = _Codec()
    assert load_decoder(None, _spec(tmp_path), codec) is codec  # no folder default: the codec
    assert load_decoder("sd", _spec(tmp_path, own=taesd), codec) is codec
    assert isinstance(load_decoder(None, _spec(tmp_path, own=taesd), codec), TinyDecoder)  # the folder's copy
    assert isinstance(load_decoder("taesd", _spec(tmp_path, own=taesd), codec), TinyDecoder)
    assert isinstance(load_decoder(f"taesd:{taesd}", _spec(tmp_path), codec), TinyDecoder)
    with pytest.raises(FadaError, match="--decoder taesd: the model folder .* has no TAESD copy"):
        load_decoder("taesd", _spec(tmp_path), codec)
    with pytest.raises(FadaError, match="--decoder 'x'"):
        load_decoder("x", _spec(tmp_path), codec)
