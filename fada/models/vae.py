"""Frozen image codecs between pixels and the latent space the UNets work in (docs/architecture.md).

Two implementations behind one interface (`LatentCodec`):

- `SDVAE`: the Stable Diffusion 1.5 `AutoencoderKL` loaded from a local diffusers folder (``<path>/vae``),
  frozen, factor 8, 4 channels, latents multiplied by the scaling factor (0.18215).
- `PixelCodec`: a weight-free, exactly invertible space-to-depth (pixel unshuffle) of the image, used at CPU
  scale. It is *not* a VAE and is named as such (``name == "pixel-codec(x2)"``) wherever it is used.

Common API: ``encode(images (N,3,H,W) in [-1,1]) -> latents (N,C,H/d,W/d)``, ``decode(latents) -> images``,
``encode_video`` / ``decode_video`` for (B,F,...) tensors, ``latent_channels``, ``downsample``, ``name``,
``to(device, dtype)``. Helpers `frames_to_tensor` / `tensor_to_frames` go between uint8 HWC frames and [-1,1]
tensors; `flatten_video` / `unflatten_video` between (B,F,...) and (B·F,...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from fada.config.model import VAEConfig
from fada.errors import FadaError, MissingFileError

__all__ = [
    "LatentCodec",
    "PixelCodec",
    "SDVAE",
    "DiffusersDecoding",
    "build_vae",
    "frames_to_tensor",
    "tensor_to_frames",
    "flatten_video",
    "unflatten_video",
]


# ----------------------------------------------------------------------------------------------------------------
# frame / video helpers


def frames_to_tensor(frames: np.ndarray, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float tensor (..., 3, H, W) in [-1, 1].

    Works for one frame (H,W,3) -> (3,H,W), a stack (N,H,W,3) -> (N,3,H,W) and a video batch (B,F,H,W,3).
    """
    arr = np.asarray(frames)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"frames must have shape (..., H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device)
    t = t.movedim(-1, -3).to(dtype)
    return t / 127.5 - 1.0


def tensor_to_frames(images: torch.Tensor) -> np.ndarray:
    """Float tensor (..., 3, H, W) in [-1, 1] -> uint8 numpy (..., H, W, 3) (clamped, rounded)."""
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"images must have shape (..., 3, H, W), got {tuple(images.shape)}")
    x = images.detach().float().cpu()
    x = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.movedim(-3, -1).numpy())


def flatten_video(video: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, F, C, H, W) -> ((B·F, C, H, W), F)."""
    if video.ndim != 5:
        raise ValueError(f"video must have shape (B, F, C, H, W), got {tuple(video.shape)}")
    b, f = video.shape[:2]
    return video.reshape(b * f, *video.shape[2:]), f


def unflatten_video(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B·F, C, H, W) -> (B, F, C, H, W)."""
    if x.shape[0] % num_frames:
        raise ValueError(f"batch {x.shape[0]} is not a multiple of num_frames={num_frames}")
    return x.reshape(x.shape[0] // num_frames, num_frames, *x.shape[1:])


# ----------------------------------------------------------------------------------------------------------------
# codecs


class LatentCodec(ABC):
    """Interface shared by the codecs. Subclasses implement `encode`, `decode` and `to`."""

    name: str = "codec"
    latent_channels: int
    downsample: int
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @abstractmethod
    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> scaled latents (N, C, H/d, W/d)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (N, 3, H, W) in [-1, 1]."""

    @abstractmethod
    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "LatentCodec":
        """Move to a device / dtype; returns self."""

    def encode_video(self, video: torch.Tensor, sample: bool = False,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1,1] -> latents (B, F, C, h, w)."""
        flat, f = flatten_video(video)
        return unflatten_video(self.encode(flat, sample=sample, generator=generator), f)

    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> images (B, F, 3, H, W) in [-1,1]."""
        flat, f = flatten_video(latents)
        return unflatten_video(self.decode(flat), f)

    def identity(self) -> dict:
        """What decides the latents this codec makes (the data cache is keyed by it)."""
        return {"codec": self.name}

    def compile(self, **options) -> bool:
        """Compile the decoding network in place (``torch.compile`` options); False when there is none to
        compile (a weight-free codec)."""
        net = getattr(getattr(self, "vae", None), "decoder", None)
        if net is None:
            return False
        net.compile(**options)
        return True

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the latents of an H×W image."""
        return (self.latent_channels, height // self.downsample, width // self.downsample)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class PixelCodec(LatentCodec):
    """Weight-free, exactly invertible space-to-depth codec: (N,3,H,W) <-> (N,3·f²,H/f,W/f).

    ``decode(encode(x))`` is bit-exact. Not a VAE: the latents are the pixels rearranged, in [-1, 1].
    """

    def __init__(self, factor: int = 2):
        if int(factor) < 1:
            raise ValueError(f"pixel codec factor must be >= 1, got {factor}")
        self.factor = int(factor)
        self.latent_channels = 3 * self.factor ** 2
        self.downsample = self.factor
        self.name = f"pixel-codec(x{self.factor})"
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "PixelCodec":
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        return self

    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not divisible by the pixel codec factor {self.factor}")
        images = images.to(self.device)
        return images if self.factor == 1 else F.pixel_unshuffle(images, self.factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must have shape (N, {self.latent_channels}, h, w), "
                             f"got {tuple(latents.shape)}")
        latents = latents.to(self.device)
        return latents if self.factor == 1 else F.pixel_shuffle(latents, self.factor)


class DiffusersDecoding(LatentCodec):
    """What a codec wrapping a frozen diffusers autoencoder (``self.vae``; ``chunk``, ``scaling_factor``) shares:
    moving it, and decoding ``latents / scaling_factor`` in chunks, clamped to [-1, 1], in its input's dtype."""

    vae: torch.nn.Module
    chunk: int = 8
    scaling_factor: float = 1.0

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "DiffusersDecoding":
        if device is not None or dtype is not None:
            from fada.models.loading import quiet_hf_loading

            with quiet_hf_loading():  # diffusers' note on casting with to() (neither VAE has fp32-only modules)
                self.vae.to(device=device, dtype=dtype)
        p = next(self.vae.parameters())
        self.device, self.dtype = p.device, p.dtype
        return self

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must have shape (N, {self.latent_channels}, h, w), "
                             f"got {tuple(latents.shape)}")
        out_dtype = latents.dtype
        outs = []
        for part in latents.split(self.chunk):
            # unbounded outputs (TAESD's too: diffusers 0.42 maps its [0, 1] to [-1, 1] without a clamp)
            x = self.vae.decode(part.to(self.device, self.dtype) / self.scaling_factor).sample
            outs.append(x.clamp(-1.0, 1.0))
        return torch.cat(outs).to(out_dtype)


class SDVAE(DiffusersDecoding):
    """Frozen SD1.5 `AutoencoderKL` from a local diffusers folder (``<path>/vae/config.json`` + weights).

    ``encode`` returns ``scaling_factor · posterior`` (mean by default, a sample with ``sample=True``, drawn from
    ``generator``); ``decode`` divides by the scaling first. Both run without grad, in chunks of ``chunk`` images,
    in the VAE's dtype, and return the dtype of their input.
    """

    def __init__(self, path, scaling_factor: float = 0.18215, chunk: int = 8,
                 device=None, dtype: Optional[torch.dtype] = None):
        root = Path(path).expanduser()
        cfg_file = root / "vae" / "config.json"
        if not cfg_file.is_file():
            raise MissingFileError(cfg_file, "SD VAE config",
                                   "vae.path must be a local Stable Diffusion 1.5 folder in diffusers layout")
        from diffusers import AutoencoderKL

        try:
            from fada.models.loading import quiet_hf_loading

            with quiet_hf_loading():
                vae = AutoencoderKL.from_pretrained(str(root), subfolder="vae")
        except (OSError, EnvironmentError) as e:
            raise MissingFileError(root / "vae" / "diffusion_pytorch_model.safetensors", "SD VAE weights",
                                   _one_line(e)) from e
        except Exception as e:  # broken config / weights: one line, naming the folder
            raise FadaError(f"cannot load the SD VAE from {root / 'vae'}: {_one_line(e)}") from e
        vae.requires_grad_(False)
        vae.eval()
        self.vae = vae
        self.path = str(root)
        self.scaling_factor = float(scaling_factor)
        self.chunk = max(1, int(chunk))
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.name = f"sd-vae(x{self.downsample}, {self.latent_channels}ch)"
        self.device = torch.device("cpu")
        self.dtype = next(vae.parameters()).dtype
        self.to(device, dtype)

    def identity(self) -> dict:
        from fada.models.loading import config_identity, weights_fingerprint

        return {"codec": "sd-vae", "config": config_identity(self.vae.config), "scaling_factor": self.scaling_factor,
                "weights": weights_fingerprint(Path(self.path) / "vae")}

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        out_dtype = images.dtype
        outs = []
        for part in images.split(self.chunk):
            dist = self.vae.encode(part.to(self.device, self.dtype)).latent_dist
            z = dist.sample(generator=generator) if sample else dist.mean
            outs.append(z * self.scaling_factor)
        return torch.cat(outs).to(out_dtype)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def build_vae(cfg: VAEConfig, device=None, dtype: Optional[torch.dtype] = None, chunk: int = 8) -> LatentCodec:
    """The codec a recipe asks for: ``kind='pixel'`` -> `PixelCodec(factor)`, ``kind='sd'`` -> `SDVAE(path)`."""
    if cfg.kind == "pixel":
        return PixelCodec(cfg.factor).to(device, dtype)
    if cfg.kind == "sd":
        if not cfg.path:
            raise FadaError("vae.path: required for vae.kind 'sd' (a local Stable Diffusion 1.5 folder)")
        return SDVAE(cfg.path, scaling_factor=cfg.scaling_factor, chunk=chunk, device=device, dtype=dtype)
    raise FadaError(f"vae.kind: unknown codec {cfg.kind!r} (choose 'pixel' or 'sd')")
