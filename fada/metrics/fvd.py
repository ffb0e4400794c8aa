"""FVD: Fréchet distance of video-network features, two variants under their own names, each following one
published protocol exactly (``PROTOCOLS`` holds the one-line statement ``fada eval`` reports).

``fvd`` (FVD-R, the one FADA's tables report: "FVD with 3D ResNet") -- DisCo's FVD-3DRN50
    Network: 3D-ResNet-50 trained on Kinetics-400 (kenshohara, ``resnet-50-kinetics.pth``). Layout of the
    original 3D-ResNets code: ``conv1`` 7x7x7 stride (1, 2, 2), ``maxpool`` 3x3x3 stride 2, four Bottleneck stages
    [3, 4, 6, 3] with shortcut type B (1x1x1 conv + BN ``downsample``), average pool, ``fc`` 2048 -> 400 (kept so
    the file loads strictly; unused). The checkpoint is ``{'arch': 'resnet-50', 'state_dict': {'module.conv1.weight',
    ...}, ...}`` (saved from DataParallel, hence ``module.``; old PyTorch, hence no ``num_batches_tracked``); a bare
    state dict also loads.
    Preprocessing, as DisCo's ``DatasetFVDVideoResize`` (Wangt-CN/DisCo ``tool/metrics/utils.py``) does for video
    files: every RGB frame resized straight to 112x112 (no crop: the aspect ratio is squashed) with
    ``make_resizer("PIL", False, "bicubic", (112, 112))`` (``tool/metrics/resize.py``): each channel as a float32
    PIL 'F' image, bicubic, **not clipped** (DisCo's copy of clean-fid's resizer has no clip; bicubic overshoot of a
    few grey levels at sharp edges stays); then the ActivityNet mean ``[114.7748, 107.7354, 99.4750]`` subtracted
    (no scaling). The video is cut into consecutive non-overlapping 16-frame segments, a short tail filled by
    repeating the last frame (a video under 16 frames is one padded segment); every segment gives the 2048-d
    average-pool feature, and the video's feature is their mean. Statistics over videos: mean and unbiased
    covariance (``np.cov``).

``fvd_i`` (FVD-I) -- StyleGAN-V's ``fvd2048_16f``
    Network: the TorchScript I3D of StyleGAN-V (``i3d_torchscript.pt``, loaded with ``torch.jit.load``).
    Protocol of StyleGAN-V ``src/metrics/frechet_video_distance.py``: one 16-frame clip per video, uint8
    (B, 3, 16, H, W) RGB at the video's own size, called as ``detector(x, rescale=True, resize=True,
    return_features=True)`` (the detector maps 0..255 to [-1, 1] and resizes to 224 itself) -> 400-d features.
    Generated videos are read from their first frame (StyleGAN-V's ``load_n_consecutive_random_offset=False``);
    StyleGAN-V draws a random start for real videos, here the first frame too, so that a score is reproducible.
    Videos shorter than 16 frames are left out (``discard_short_videos``). Statistics: mean and the biased
    covariance (divided by N, StyleGAN-V's ``FeatureStats``). StyleGAN-V reports it over 2048 videos.

The distance itself is ``frechet_from_features`` over per-video features (at least 2 videos per set).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fada.errors import FadaError
from fada.metrics.frechet import frechet_from_features
from fada.metrics.weights import (FVD_I3D, FVD_RESNET50, WeightedNet, check_file, load_into, strip_prefix,
                                  torch_load_safe)

ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)  # RGB, 0..255 scale
SEGMENT_FRAMES = 16
RESNET_SIZE = 112
I3D_SIZE = 224


# ---------------------------------------------------------------------------------------------------------------
# 3D-ResNet-50 (original kenshohara layout)


class Bottleneck3D(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResNet3D(nn.Module):
    """3D ResNet with Bottleneck blocks. ``forward`` gives the (N, 512*4*width) average-pool features.

    ``width`` scales the stage widths (1.0 = the published ResNet-50 with 2048-d features); smaller widths exist
    only for fast tests of the wiring.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 400, width: float = 1.0):
        super().__init__()
        planes = [max(1, int(round(p * width))) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        self.conv1 = nn.Conv3d(3, planes[0], kernel_size=7, stride=(1, 2, 2), padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(planes[0], layers[0], 1)
        self.layer2 = self._make_layer(planes[1], layers[1], 2)
        self.layer3 = self._make_layer(planes[2], layers[2], 2)
        self.layer4 = self._make_layer(planes[3], layers[3], 2)
        self.feature_dim = planes[3] * Bottleneck3D.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes)  # in the checkpoint; unused for FVD

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck3D.expansion:  # shortcut type B
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes * 4),
            )
        layers = [Bottleneck3D(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck3D(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 16, 112, 112) mean-subtracted clips -> (N, feature_dim).

        At 16x112x112 the last stage is 1x4x4, so this global average equals upstream's AvgPool3d((1, 4, 4)).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool3d(x, 1), 1)


def resnet3d_50(**kw) -> ResNet3D:
    return ResNet3D((3, 4, 6, 3), **kw)


def load_resnet3d_50(path, width: float = 1.0) -> ResNet3D:
    """3D-ResNet-50 from a 3D-ResNets checkpoint (``{'state_dict': {'module.…'}}``) or a bare state dict."""
    ckpt = torch_load_safe(path, "3D-ResNet-50")
    state = ckpt
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        arch = ckpt.get("arch")
        if isinstance(arch, str) and arch not in ("resnet-50", "resnet50"):
            raise FadaError(f"{path}: checkpoint arch is {arch!r}, FVD-R needs resnet-50")
        state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise FadaError(f"{path}: not a 3D-ResNet checkpoint")
    return load_into(resnet3d_50(width=width), strip_prefix(state, ("module.",)), path, "3D-ResNet-50 (Kinetics)")


# ---------------------------------------------------------------------------------------------------------------
# preprocessing shared by both variants


def _check_video(video) -> np.ndarray:
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8:
        raise FadaError(f"expected a uint8 RGB video (T, H, W, 3), got {v.dtype} {v.shape}")
    if v.shape[0] == 0:
        raise FadaError("empty video (0 frames)")
    return v


def pil_bicubic_float(frame: np.ndarray, size: int) -> np.ndarray:
    """One (H, W, 3) frame -> (size, size, 3) float32: each channel as a float PIL 'F' image resized bicubic,
    unclipped (DisCo's ``make_resizer("PIL", False, "bicubic", (size, size))``)."""
    from PIL import Image

    f = np.asarray(frame, dtype=np.float32)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f[:, :, c])).resize(
        (size, size), resample=Image.BICUBIC), dtype=np.float32) for c in range(3)], axis=-1)


def segment_indices(n_frames: int, length: int = SEGMENT_FRAMES) -> list[np.ndarray]:
    """Consecutive non-overlapping windows of ``length`` frame indices; a short tail repeats the last frame
    (DisCo's ``video[[-1]].repeat``)."""
    if n_frames <= 0:
        raise FadaError("empty video (0 frames)")
    return [np.minimum(np.arange(start, start + length), n_frames - 1) for start in range(0, n_frames, length)]


def resnet_clips(video, size: int = RESNET_SIZE, length: int = SEGMENT_FRAMES) -> Tensor:
    """uint8 (T, H, W, 3) -> (S, 3, length, size, size) float32 clips for the 3D-ResNet (DisCo FVD-3DRN50)."""
    v = _check_video(video)
    frames = np.stack([pil_bicubic_float(f, size) for f in v]) - np.asarray(ACTIVITYNET_MEAN, dtype=np.float32)
    clips = np.stack([frames[idx] for idx in segment_indices(frames.shape[0], length)])  # S, L, H, W, 3
    return torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3)))


def i3d_clip(video, length: int = SEGMENT_FRAMES) -> Tensor:
    """uint8 (T, H, W, 3) -> the (1, 3, length, H, W) uint8 clip StyleGAN-V gives the I3D: the first ``length``
    frames, unresized (the detector rescales and resizes)."""
    v = _check_video(video)
    if v.shape[0] < length:
        raise FadaError(f"FVD-I (StyleGAN-V) needs a clip of {length} frames, the video has {v.shape[0]} "
                        "(left out, as StyleGAN-V discards short videos)")
    return torch.from_numpy(np.ascontiguousarray(v[:length].transpose(3, 0, 1, 2)))[None]


# ---------------------------------------------------------------------------------------------------------------
# extractors


class FVDExtractor(WeightedNet):
    """FVD-R features: one 2048-d vector per video (mean over its 16-frame segments)."""

    name = "fvd"
    weights_file = FVD_RESNET50
    default_batch_size = 4
    load_weights = staticmethod(load_resnet3d_50)

    @torch.no_grad()
    def segment_features(self, video) -> np.ndarray:
        clips = resnet_clips(video)
        out = [self.model(clips[i:i + self.batch_size].to(self.device)).double().cpu().numpy()
               for i in range(0, clips.shape[0], self.batch_size)]
        return np.concatenate(out, 0)

    def features(self, video) -> np.ndarray:
        """uint8 (T, H, W, 3) RGB video -> (2048,) float64."""
        return self.segment_features(video).mean(axis=0)


class I3DExtractor(WeightedNet):
    """FVD-I features from the TorchScript I3D: one 400-d vector per video, from its first 16-frame clip."""

    name = "fvd_i"
    weights_file = FVD_I3D
    default_batch_size = 1
    load_weights = staticmethod(lambda path: load_i3d_torchscript(path))

    @torch.no_grad()
    def features(self, video) -> np.ndarray:
        """uint8 (T, H, W, 3) RGB video (T >= 16) -> (400,) float64."""
        y = self.model(i3d_clip(video).to(self.device), rescale=True, resize=True, return_features=True)
        return y.double().cpu().numpy().reshape(-1)


def load_i3d_torchscript(path):
    """``torch.jit.load`` of the StyleGAN-V I3D detector (TorchScript, not a pickle)."""
    path = check_file(path, "FVD-I (I3D TorchScript) weights")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FadaError(f"{path}: not a TorchScript I3D file ({type(e).__name__}: {first[:200]})") from None


# what ``fada eval`` reports with each score, and the covariance each protocol uses
PROTOCOLS = {
    "fvd": "FVD-R as DisCo's FVD-3DRN50: 3D-ResNet-50 (Kinetics), frames PIL-bicubic to 112x112 (no crop, "
           "unclipped), ActivityNet mean subtracted, 16-frame segments (tail repeats the last frame), mean "
           "feature per video, unbiased covariance",
    "fvd_i": "FVD-I as StyleGAN-V's fvd2048_16f: TorchScript I3D on the first 16 frames of each video, uint8 at "
             "its own size (rescale and resize inside the detector), videos under 16 frames left out, biased "
             "covariance",
}
COVARIANCE_DDOF = {"fvd": 1, "fvd_i": 0}


def fvd_from_videos(extractor, generated: Sequence, reference: Sequence) -> float:
    """Fréchet distance between per-video features of two sets of uint8 videos (>= 2 videos per set), with the
    extractor's protocol's covariance."""
    a = np.stack([extractor.features(v) for v in generated])
    b = np.stack([extractor.features(v) for v in reference])
    return frechet_from_features(a, b, ddof=COVARIANCE_DDOF[extractor.name])
