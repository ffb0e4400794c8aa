"""Synthetic talking-face videos and metric weight files (random, in the upstream layouts) for the eval tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from fada.data.media import write_video
from fada.data.synthetic import render_clip, sample_identity, shift_audio, synth_speech

SR = 16000
FPS = 25


def talking_clip(seed: int, seconds: float, size: int = 64):
    """(frames uint8 (T, size, size, 3), audio float32) of a drawn face speaking, lips following the audio."""
    rng = np.random.default_rng(seed)
    ident = sample_identity(rng)
    audio = synth_speech(seconds, rng, pitch=ident["pitch"])
    return render_clip(ident, audio, fps=FPS, size=size, seed=seed), audio


def write_clip(path: Path, frames, audio, shift_frames: int = 0) -> Path:
    """mp4 with audio; ``shift_frames`` > 0 delays the audio by that many video frames (out of sync)."""
    if shift_frames:
        audio = shift_audio(audio, shift_frames, FPS, SR)
    return write_video(path, frames, FPS, audio=audio, sample_rate=SR)


def noisy(frames, seed: int, amp: int = 25):
    n = np.random.default_rng(seed).integers(-amp, amp + 1, frames.shape)
    return np.clip(frames.astype(np.int16) + n, 0, 255).astype(np.uint8)


class TinyI3D(torch.nn.Module):
    """A random stand-in with the TorchScript I3D's call convention: uint8 (B, 3, T, H, W) with rescale (0..255 to
    [-1, 1]) and resize (to 224) inside -> (B, 400)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 400, kernel_size=(2, 8, 8), stride=(2, 8, 8))

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = torch.nn.functional.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        return torch.relu(self.conv(x)).mean(dim=(2, 3, 4))


def write_weights(folder: Path, which=("fid", "fvd", "fvd_i", "sync")) -> Path:
    """Random networks saved exactly as the upstream files are laid out, under the upstream names."""
    from fada.metrics.fvd import resnet3d_50
    from fada.metrics.inception import FIDInceptionV3
    from fada.metrics.syncnet import SyncNetS
    from fada.metrics.weights import FID_INCEPTION, FVD_I3D, FVD_RESNET50, SYNCNET

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    def plain(m):
        return {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}

    if "fid" in which:  # pytorch-fid: a plain state dict
        torch.save(plain(FIDInceptionV3()), folder / FID_INCEPTION)
    if "fvd" in which:  # kenshohara 3D-ResNets: {'arch', 'state_dict': {'module.' ...}}
        torch.save({"epoch": 200, "arch": "resnet-50",
                    "state_dict": {"module." + k: v for k, v in plain(resnet3d_50()).items()}},
                   folder / FVD_RESNET50)
    if "fvd_i" in which:  # StyleGAN-V: TorchScript
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.script(TinyI3D().eval()).save(str(folder / FVD_I3D))
    if "sync" in which:  # joonson/syncnet_python's syncnet_v2.model: S's bare keys
        torch.save(plain(SyncNetS()), folder / SYNCNET)
    return folder
