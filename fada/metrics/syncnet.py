"""Sync-C / Sync-D with SyncNet (joonson/syncnet_python, ``syncnet_v2.model``).

Network (``S`` upstream, same parameter names): an audio CNN ``netcnnaud`` on a (1, 13, 20) MFCC window and a lip
CNN ``netcnnlip`` (Conv3d, 5-frame temporal kernel) on a (3, 5, 224, 224) stack of face crops, each followed by a
fully connected head (``netfcaud`` / ``netfclip``, 512 -> 512 -> 1024), giving 1024-d embeddings. The upstream file
is a plain state dict with the bare keys of ``S`` (``netcnnaud.0.weight``, ...: ``SyncNetInstance.loadParameters``
copies each into ``self.__S__.state_dict()[name]``); a state dict saved from the instance, keys prefixed ``__S__.``,
also loads.

Preprocessing, as ``SyncNetInstance.evaluate``:

* video at 25 fps (other rates are resampled to 25 fps by nearest frame), face crops resized to 224x224 with
  OpenCV bilinear (the size ``run_pipeline.py`` crops to), **BGR** channel order (upstream reads JPEGs with
  ``cv2.imread``), raw 0..255 values, no normalisation; window i = frames i..i+4.
* audio mono at 16 kHz (resampled if needed), scaled to the int16 range (upstream reads a 16-bit PCM wav), 13 MFCCs
  at 100 Hz with ``python_speech_features.mfcc`` defaults (25 ms rectangular window, 10 ms hop, 512-point FFT,
  26 mel filters 0..8 kHz, pre-emphasis 0.97, cepstral lifter 22, c0 replaced by log frame energy). ``mfcc_psf``
  below re-implements exactly that recipe in numpy (the package is only a test dependency, against which it is
  checked, as against syncnet_python's own output in tests/metrics/test_golden.py); window i = MFCC frames
  4i..4i+19 (0.2 s).
* ``min_length = min(n_frames, floor(n_samples / 640))``, windows i = 0 .. min_length - 6.

Offset search (``calc_pdist`` with ``vshift = 15``): for every video window i and shift j in [0, 2*vshift] the
distance ``|v_i - a_{i + j - vshift}|`` (audio zero-padded at the ends); ``mdist[j]`` is its mean over i.
Sync-D = min(mdist) (lower is better), Sync-C = median(mdist) - min(mdist) (higher is better),
offset = vshift - argmin(mdist): a positive offset means video window i matches audio window i - offset.
"""

from __future__ import annotations

import math
from typing import Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dct
from torch import Tensor, nn

from fada.errors import FadaError
from fada.metrics.weights import SYNCNET, WeightedNet, load_into, strip_prefix, torch_load_safe

SYNC_SR = 16000
SYNC_FPS = 25
CROP_SIZE = 224
VSHIFT = 15


class SyncNetS(nn.Module):
    """The SyncNet ``S`` module (upstream layout, indices included, so state-dict keys match)."""

    EMBED_DIM = 1024

    def __init__(self, num_layers_in_fc_layers: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=1, stride=1),
            nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(192), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.BatchNorm2d(384), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers),
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, num_layers_in_fc_layers),
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0), nn.BatchNorm3d(96),
            nn.ReLU(inplace=True), nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256),
            nn.ReLU(inplace=True), nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0), nn.BatchNorm3d(512), nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: Tensor) -> Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024)."""
        return self.netfcaud(torch.flatten(self.netcnnaud(x), 1))

    def forward_lip(self, x: Tensor) -> Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 crops -> (N, 1024)."""
        return self.netfclip(torch.flatten(self.netcnnlip(x), 1))


def load_syncnet(path) -> SyncNetS:
    """SyncNetS from ``syncnet_v2.model`` (plain state dict, bare keys or ``__S__.``-prefixed; strict key/shape
    check)."""
    state = torch_load_safe(path, "SyncNet")
    if not isinstance(state, dict):
        raise FadaError(f"{path}: not a SyncNet state dict")
    return load_into(SyncNetS(), strip_prefix(state, ("__S__.", "module.")), path, "SyncNet (syncnet_v2)")


# ---------------------------------------------------------------------------------------------------------------
# audio: python_speech_features.mfcc, re-implemented


def _hz2mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel2hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank_psf(nfilt: int = 26, nfft: int = 512, sr: int = SYNC_SR, low: float = 0.0,
                       high: float = None) -> np.ndarray:
    """Triangular mel filters on FFT-bin edges floor((nfft+1) * f / sr), as python_speech_features."""
    high = high or sr / 2
    edges = np.floor((nfft + 1) * _mel2hz(np.linspace(_hz2mel(low), _hz2mel(high), nfilt + 2)) / sr)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    bins = np.arange(nfft // 2 + 1)
    for j in range(nfilt):
        lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
        up = (bins >= lo) & (bins < mid)
        down = (bins >= mid) & (bins < hi)
        fb[j, up] = (bins[up] - lo) / (mid - lo)
        fb[j, down] = (hi - bins[down]) / (hi - mid)
    return fb


def mfcc_psf(signal, sr: int = SYNC_SR, winlen: float = 0.025, winstep: float = 0.01, numcep: int = 13,
             nfilt: int = 26, nfft: int = 512, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """(n_frames, numcep) MFCCs with the python_speech_features defaults (see module docstring)."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise FadaError("empty audio")
    x = np.append(x[0], x[1:] - preemph * x[:-1])
    flen = int(math.floor(winlen * sr + 0.5))  # round half up
    fstep = int(math.floor(winstep * sr + 0.5))
    n = 1 if x.size <= flen else 1 + int(math.ceil((x.size - flen) / fstep))
    x = np.concatenate([x, np.zeros((n - 1) * fstep + flen - x.size)])
    frames = x[np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = pspec.sum(1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ mel_filterbank_psf(nfilt, nfft, sr).T
    feat = np.where(feat == 0, eps, feat)
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        cep = cep * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    cep[:, 0] = np.log(energy)
    return cep


def _to_mono16k(audio, sr: int) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 2:  # (n, channels) or (channels, n)
        a = a.mean(axis=1) if a.shape[0] >= a.shape[1] else a.mean(axis=0)
    if a.ndim != 1:
        raise FadaError(f"audio must be 1-D (or 2-D with channels), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64) / 32768.0
    a = a.astype(np.float64)
    if int(sr) != SYNC_SR:
        from scipy.signal import resample_poly

        g = math.gcd(int(sr), SYNC_SR)
        a = resample_poly(a, SYNC_SR // g, int(sr) // g)
    # upstream works on int16 PCM values; the MFCC log-energy (c0) depends on this scale
    return np.clip(np.round(a * 32768.0), -32768, 32767)


def _resample_frames(frames: np.ndarray, fps: float) -> np.ndarray:
    if abs(float(fps) - SYNC_FPS) < 1e-6:
        return frames
    n_out = int(math.floor(frames.shape[0] * SYNC_FPS / float(fps)))
    idx = np.minimum(np.round(np.arange(n_out) * float(fps) / SYNC_FPS).astype(int), frames.shape[0] - 1)
    return frames[idx]


def prepare_syncnet_inputs(frames, audio, sr: int, fps: float = SYNC_FPS) -> tuple[Tensor, Tensor]:
    """-> (video windows (N, 3, 5, 224, 224), MFCC windows (N, 1, 13, 20)), upstream conventions."""
    v = np.asarray(frames)
    if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
        raise FadaError(f"expected uint8 RGB face crops (T, H, W, 3), got {v.dtype} {v.shape}")
    v = _resample_frames(v, fps)
    pcm = _to_mono16k(audio, sr)
    mfcc = mfcc_psf(pcm, SYNC_SR).T  # (13, M), 100 Hz
    min_length = min(v.shape[0], int(math.floor(pcm.size / 640)))
    last = min_length - 5
    if last <= 0:
        raise FadaError(f"SyncNet needs at least 6 frames (0.24 s at 25 fps) of video and audio, got {min_length}")
    crops = np.stack([cv2.resize(f[:, :, ::-1], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
                      if f.shape[:2] != (CROP_SIZE, CROP_SIZE) else f[:, :, ::-1] for f in v[:min_length]])
    vt = torch.from_numpy(np.ascontiguousarray(crops)).float().permute(3, 0, 1, 2)  # 3, T, H, W
    vid = torch.stack([vt[:, i:i + 5] for i in range(last)])
    need = 4 * (last - 1) + 20
    if mfcc.shape[1] < need:
        mfcc = np.pad(mfcc, ((0, 0), (0, need - mfcc.shape[1])))
    mt = torch.from_numpy(mfcc).float()
    aud = torch.stack([mt[:, 4 * i:4 * i + 20] for i in range(last)])[:, None]
    return vid, aud


def sync_offset_search(vid_feat: Tensor, aud_feat: Tensor, vshift: int = VSHIFT) -> dict:
    """Upstream ``calc_pdist`` + confidence: -> {sync_c, sync_d, offset, mean_dists (2*vshift+1,)}."""
    vid_feat = torch.as_tensor(vid_feat, dtype=torch.float32)
    aud_feat = torch.as_tensor(aud_feat, dtype=torch.float32)
    if vid_feat.shape != aud_feat.shape or vid_feat.ndim != 2:
        raise FadaError(f"feature shapes differ: {tuple(vid_feat.shape)} vs {tuple(aud_feat.shape)}")
    win = 2 * vshift + 1
    padded = F.pad(aud_feat, (0, 0, vshift, vshift))
    dists = torch.stack([F.pairwise_distance(vid_feat[i:i + 1].expand(win, -1), padded[i:i + win])
                         for i in range(vid_feat.shape[0])])  # (N, win)
    mdist = dists.mean(0)
    minval, minidx = torch.min(mdist, 0)
    return {
        "sync_c": float(torch.median(mdist) - minval),
        "sync_d": float(minval),
        "offset": int(vshift - int(minidx)),
        "mean_dists": mdist.numpy().astype(np.float64),
    }


class SyncNetScorer(WeightedNet):
    """Sync-C / Sync-D / offset of a talking-face clip (face crops + its audio)."""

    name = "sync"
    weights_file = SYNCNET
    default_batch_size = 20
    load_weights = staticmethod(load_syncnet)

    def __init__(self, weights_path=None, *, model: SyncNetS = None, vshift: int = VSHIFT,
                 batch_size: int | None = None, device: Union[str, torch.device] = "cpu"):
        super().__init__(weights_path, model=model, batch_size=batch_size, device=device)
        self.vshift = int(vshift)

    @torch.no_grad()
    def embeddings(self, frames, audio, sr: int, fps: float = SYNC_FPS) -> tuple[Tensor, Tensor]:
        vid, aud = prepare_syncnet_inputs(frames, audio, sr, fps)
        bs = self.batch_size
        v = torch.cat([self.model.forward_lip(vid[i:i + bs].to(self.device)).cpu() for i in range(0, len(vid), bs)])
        a = torch.cat([self.model.forward_aud(aud[i:i + bs].to(self.device)).cpu() for i in range(0, len(aud), bs)])
        return v, a

    def score(self, frames, audio, sr: int, fps: float = SYNC_FPS) -> dict:
        """uint8 (T, H, W, 3) RGB face crops + audio (float in [-1, 1] or int16) -> {sync_c, sync_d, offset, ...}."""
        v, a = self.embeddings(frames, audio, sr, fps)
        out = sync_offset_search(v, a, self.vshift)
        out["n_windows"] = int(v.shape[0])
        return out
