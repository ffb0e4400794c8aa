"""FVD: Fréchet distance of video-network features, two variants under their own names.

``fvd`` (FVD-R, the one FADA's tables report: "FVD with 3D ResNet")
    3D-ResNet-50 trained on Kinetics-400 (kenshohara, ``resnet-50-kinetics.pth``), the network talking-head papers
    use for FVD-R. Layout of the original 3D-ResNets code: ``conv1`` 7x7x7 stride (1, 2, 2), ``maxpool`` 3x3x3 stride
    2, four Bottleneck stages [3, 4, 6, 3] with shortcut type B (1x1x1 conv + BN ``downsample``), average pool,
    ``fc`` 2048 -> 400 (kept so the file loads strictly; unused). The checkpoint is
    ``{'arch': 'resnet-50', 'state_dict': {'module.conv1.weight', ...}, ...}`` (saved from DataParallel, hence
    ``module.``; old PyTorch, hence no ``num_batches_tracked``); a bare state dict also loads.
    Preprocessing (the original ``classify.py`` pipeline): each RGB frame resized so its short side is 112
    (bilinear; OpenCV here, PIL upstream), centre-cropped to 112x112, kept in the 0..255 range with the
    ActivityNet mean ``[114.7748, 107.7354, 99.4750]`` subtracted (std 1, no other scaling). The video is cut into
    consecutive non-overlapping 16-frame segments (a short tail is loop-padded as upstream ``LoopPadding`` does,
    and a video shorter than 16 frames gives one looped segment); each segment gives the 2048-d average-pool
    feature ("feature" mode), and the video's feature is the mean over its segments.

``fvd_i`` (FVD-I)
    The TorchScript I3D of StyleGAN-V / fvd-comparison (``i3d_torchscript.pt``, loaded with ``torch.jit.load``).
    Input convention: float32 (B, 3, T, 224, 224) in [-1, 1], RGB, called as
    ``detector(x, rescale=False, resize=False, return_features=True)`` -> (B, 400) pre-softmax features. We
    resize the short side to 224 (bilinear), centre-crop 224x224 and map [0, 255] -> [-1, 1] ourselves, and use
    the same 16-frame segments and mean as FVD-R.

The distance itself is ``frechet_from_features`` over per-video features (at least 2 videos per set).
"""

from __future__ import annotations

from typing import Sequence

import cv2
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


def resize_center_crop(video: np.ndarray, size: int) -> np.ndarray:
    """Resize every frame so its short side is ``size`` (bilinear), then centre-crop size x size. uint8 out."""
    t, h, w, _ = video.shape
    if h < w:
        nh, nw = size, max(size, int(size * w / h))
    else:
        nw, nh = size, max(size, int(size * h / w))
    if (nh, nw) != (h, w):
        video = np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_LINEAR) for f in video])
    y0 = int(round((nh - size) / 2.0))
    x0 = int(round((nw - size) / 2.0))
    return video[:, y0:y0 + size, x0:x0 + size]


def segment_indices(n_frames: int, length: int = SEGMENT_FRAMES) -> list[np.ndarray]:
    """Consecutive non-overlapping windows of ``length`` frame indices; a short tail is loop-padded."""
    if n_frames <= 0:
        raise FadaError("empty video (0 frames)")
    segs = []
    for start in range(0, n_frames, length):
        n = min(length, n_frames - start)
        segs.append(start + np.arange(length) % n)  # LoopPadding: cycle the segment's own frames
    return segs


def resnet_clips(video, size: int = RESNET_SIZE, length: int = SEGMENT_FRAMES) -> Tensor:
    """uint8 (T, H, W, 3) -> (S, 3, length, size, size) mean-subtracted float32 clips for the 3D-ResNet."""
    v = resize_center_crop(_check_video(video), size).astype(np.float32)
    v -= np.asarray(ACTIVITYNET_MEAN, dtype=np.float32)
    clips = np.stack([v[idx] for idx in segment_indices(v.shape[0], length)])  # S, L, H, W, 3
    return torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3)))


def i3d_clips(video, size: int = I3D_SIZE, length: int = SEGMENT_FRAMES) -> Tensor:
    """uint8 (T, H, W, 3) -> (S, 3, length, size, size) float32 in [-1, 1] for the TorchScript I3D."""
    v = resize_center_crop(_check_video(video), size).astype(np.float32) / 127.5 - 1.0
    clips = np.stack([v[idx] for idx in segment_indices(v.shape[0], length)])
    return torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3)))


# ---------------------------------------------------------------------------------------------------------------
# extractors


class FVDExtractor(WeightedNet):
    """FVD-R features: one 2048-d vector per video (mean over 16-frame segments)."""

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
    """FVD-I features from the TorchScript I3D: one 400-d vector per video (mean over 16-frame segments)."""

    name = "fvd_i"
    weights_file = FVD_I3D
    default_batch_size = 2
    load_weights = staticmethod(lambda path: load_i3d_torchscript(path))

    @torch.no_grad()
    def segment_features(self, video) -> np.ndarray:
        clips = i3d_clips(video)
        out = []
        for i in range(0, clips.shape[0], self.batch_size):
            y = self.model(clips[i:i + self.batch_size].to(self.device), rescale=False, resize=False,
                           return_features=True)
            out.append(y.double().cpu().numpy().reshape(y.shape[0], -1))
        return np.concatenate(out, 0)

    def features(self, video) -> np.ndarray:
        return self.segment_features(video).mean(axis=0)


def load_i3d_torchscript(path):
    """``torch.jit.load`` of the StyleGAN-V I3D detector (TorchScript, not a pickle)."""
    path = check_file(path, "FVD-I (I3D TorchScript) weights")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FadaError(f"{path}: not a TorchScript I3D file ({type(e).__name__}: {first[:200]})") from None


def fvd_from_videos(extractor, generated: Sequence, reference: Sequence) -> float:
    """Fréchet distance between per-video features of two sets of uint8 videos (>= 2 videos per set)."""
    a = np.stack([extractor.features(v) for v in generated])
    b = np.stack([extractor.features(v) for v in reference])
    return frechet_from_features(a, b)
