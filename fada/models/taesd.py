"""TAESD as an optional decoder: diffusers' `AutoencoderTiny` (madebyollin/taesd) from a local folder.

TAESD is a distilled approximation of the SD VAE's decoder in the *same* latent space: it decodes the SD VAE's
scaled latents (what `SDVAE.encode` returns, already times 0.18215; its own ``scaling_factor`` is 1.0) for about
an order of magnitude less compute, with softer fine detail and slightly different colours. It only decodes: the
reference frame is still encoded by the model's own codec.

    kind, path = parse_decoder("taesd:/models/taesd")             # "sd" | "taesd" | "taesd:PATH"
    decoder = load_decoder("taesd:/models/taesd", spec, codec)    # the codec itself for "sd"

Folder layout (diffusers): ``config.json`` + ``diffusion_pytorch_model.safetensors``; nothing pickled is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from fada.errors import FadaError, MissingFileError
from fada.models.vae import DiffusersDecoding, LatentCodec, _one_line

__all__ = ["TinyDecoder", "parse_decoder", "load_decoder", "decoder_geometry", "TAESD_DIR", "DECODER_FORMS"]

TAESD_DIR = "taesd"  # the model folder's own copy (``fada export --decoder taesd:PATH``)
WEIGHTS = "diffusion_pytorch_model.safetensors"
DECODER_FORMS = "sd (the model's own VAE), taesd (the model folder's TAESD copy) or taesd:PATH (a local TAESD folder)"
HINT = "a local TAESD folder in diffusers layout (e.g. madebyollin/taesd): config.json + " + WEIGHTS


def decoder_geometry(folder) -> tuple[int, int]:
    """(latent channels, upsampling factor) of a TAESD folder, from its config.json alone (no weights read)."""
    from fada.models.loading import read_json

    cfg_file = Path(folder).expanduser() / "config.json"
    if not cfg_file.is_file():
        raise MissingFileError(cfg_file, "TAESD decoder config", HINT)
    cfg = read_json(cfg_file, "TAESD decoder config")
    if cfg.get("_class_name", "AutoencoderTiny") != "AutoencoderTiny":
        raise FadaError(f"{cfg_file}: a {cfg.get('_class_name')}, not an AutoencoderTiny (TAESD)")
    try:  # the decoder upsamples between consecutive stages (diffusers' DecoderTiny)
        stages = len(cfg.get("decoder_block_out_channels", (64, 64, 64, 64)))
        return int(cfg.get("latent_channels", 4)), int(cfg.get("upsampling_scaling_factor", 2)) ** (stages - 1)
    except (TypeError, ValueError):
        raise FadaError(f"{cfg_file}: latent_channels / decoder_block_out_channels / "
                        "upsampling_scaling_factor are not numbers and lists") from None


def check_geometry(folder, latent_channels: int, downsample: int, codec_name: str) -> None:
    """A one-line error naming the folder's config.json unless it decodes the codec's latents."""
    lc, up = decoder_geometry(folder)
    if (lc, up) != (int(latent_channels), int(downsample)):
        raise FadaError(f"{Path(folder).expanduser() / 'config.json'}: TAESD decodes {lc} latent channels at x{up}, "
                        f"the model's codec {codec_name} makes {latent_channels} channels at x{downsample}")


class TinyDecoder(DiffusersDecoding):
    """Frozen `AutoencoderTiny` used for decoding only; ``decode`` returns [-1, 1] like `SDVAE.decode`, in chunks of
    ``chunk`` images, without grad, in the dtype of its input."""

    def __init__(self, path, chunk: int = 8, device=None, dtype: Optional[torch.dtype] = None):
        root = Path(path).expanduser()
        self.latent_channels, self.downsample = decoder_geometry(root)
        if not (root / WEIGHTS).is_file():
            raise MissingFileError(root / WEIGHTS, "TAESD decoder weights", HINT)
        from diffusers import AutoencoderTiny

        from fada.models.loading import quiet_hf_loading

        try:
            with quiet_hf_loading():
                vae = AutoencoderTiny.from_pretrained(str(root), use_safetensors=True, local_files_only=True)
        except Exception as e:  # broken config / weights: one line, naming the folder
            raise FadaError(f"cannot load the TAESD decoder from {root}: {_one_line(e)}") from e
        vae.encoder = None  # decode() only runs vae.decoder: the encoder's weights need no memory
        vae.requires_grad_(False)
        vae.eval()
        self.vae = vae
        self.path = str(root)
        self.chunk = max(1, int(chunk))
        # diffusers pipelines decode ``latents / scaling_factor``; TAESD's is 1.0 (it works on the scaled latents)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.name = f"taesd(x{self.downsample}, {self.latent_channels}ch)"
        self.to(device, dtype)

    def identity(self) -> dict:
        from fada.models.loading import config_identity, weights_fingerprint

        return {"codec": "taesd", "config": config_identity(self.vae.config), "weights": weights_fingerprint(self.path)}

    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise FadaError(f"the tiny decoder {self.name} only decodes; images are encoded by the model's codec")


def parse_decoder(option: str) -> tuple[str, Optional[Path]]:
    """``"sd"`` -> ("sd", None); ``"taesd"`` -> ("taesd", None) (the model folder's copy); ``"taesd:PATH"`` ->
    ("taesd", PATH)."""
    text = str(option).strip()
    if text in ("sd", "taesd"):
        return text, None
    if text.startswith("taesd:") and text[len("taesd:"):].strip():
        return "taesd", Path(text[len("taesd:"):].strip()).expanduser()
    raise FadaError(f"--decoder {option!r}: choose {DECODER_FORMS}")


def load_decoder(option: Optional[str], spec, codec: LatentCodec, device=None,
                 dtype: Optional[torch.dtype] = None) -> LatentCodec:
    """The codec to decode with: ``codec`` itself for "sd" (and for None when the folder names no decoder), else a
    `TinyDecoder` checked against ``codec`` (latent channels, downsampling). None: the folder's default
    (``spec.decoder``)."""
    own = (spec.decoder or {}).get("path") if (spec.decoder or {}).get("kind") == "taesd" else None
    if option is None:
        if own is None:
            return codec
        path = Path(own)
    else:
        kind, path = parse_decoder(option)
        if kind == "sd":
            return codec
        if path is None:
            if own is None:
                raise FadaError(f"--decoder taesd: the model folder {spec.root} has no TAESD copy; pass "
                                f"--decoder taesd:PATH or export it with --decoder taesd:PATH")
            path = Path(own)
    check_geometry(path, codec.latent_channels, codec.downsample, codec.name)
    return TinyDecoder(path, device=device, dtype=dtype)
