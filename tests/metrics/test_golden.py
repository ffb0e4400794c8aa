"""Forward passes against the ORIGINAL metric code's outputs (tests/metrics/golden/, see its README).

The goldens were computed by pytorch-fid, the kenshohara / DisCo 3D-ResNet, syncnet_python with
python_speech_features, and DisCo's FVD-R preprocessing, on weights made by a rule that depends only on a state
dict's key names and shapes. A port filled by the same rule through its own (upstream-named) keys must reproduce
them; each ``*_mutant`` test applies a plausible porting fault and checks that the comparison then fails, so these
tests can tell a faithful port from a wrong one (shape and round-trip tests cannot).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

GOLDEN = Path(__file__).parent / "golden"
RTOL = 1e-4  # float32 network outputs (the goldens' README)


def golden(name: str) -> dict:
    return load_file(str(GOLDEN / f"{name}.safetensors"))


def rule_fill(module: torch.nn.Module) -> torch.nn.Module:
    """The goldens' weight rule: per key of ``sorted(state_dict)``, a generator seeded with crc32(key)."""
    sd = module.state_dict()
    new = {}
    for k in sorted(sd):
        shape = sd[k].shape
        if k.endswith("num_batches_tracked"):
            new[k] = sd[k]
            continue
        g = torch.Generator().manual_seed(zlib.crc32(k.encode()))
        if k.endswith("running_var"):
            v = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("running_mean") or k.endswith(".bias"):
            v = (torch.rand(shape, generator=g) - 0.5) * 0.4
        elif len(shape) == 1:
            v = torch.rand(shape, generator=g) * 0.8 + 0.4
        else:
            v = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
        new[k] = v
    module.load_state_dict(new, strict=True)
    return module.float().eval()


def close(a, b, rtol=RTOL) -> bool:
    """Relative agreement of two outputs, scaled by the golden's magnitude (near-zero elements do not dominate)."""
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return a.shape == b.shape and float((a - b).abs().max()) <= rtol * float(b.abs().max())


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- FID Inception (pytorch-fid) -------------------------------------------------------------------------------

def _inception_pool3(monkeypatch=None, mutate=None) -> tuple[torch.Tensor, torch.Tensor]:
    from fada.metrics.inception import FIDInceptionV3

    g = golden("fid_inception")
    model = rule_fill(FIDInceptionV3())
    if mutate is not None:
        mutate(model, monkeypatch)
    with torch.no_grad():
        return model(g["input"]), g["pool3"]


def test_fid_inception_reproduces_pytorch_fid():
    out, ref = _inception_pool3()
    assert close(out, ref), float((out - ref).abs().max())


def _max_pool_branch(model, mp):
    mp.setattr("fada.metrics.inception._avg_pool_nopad", lambda x: F.max_pool2d(x, 3, 1, 1))


def _pad_counted(model, mp):
    mp.setattr("fada.metrics.inception._avg_pool_nopad", lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=True))


def _bicubic_resize(model, mp):
    mp.setattr(type(model), "preprocess",
               lambda self, x: 2 * F.interpolate(x, size=(299, 299), mode="bicubic", align_corners=False) - 1)


def _last_block_avg(model, mp):
    model.Mixed_7c.pool = "avg"


@pytest.mark.parametrize("mutate", [_max_pool_branch, _pad_counted, _bicubic_resize, _last_block_avg],
                         ids=["max-pool-branch", "count-include-pad", "bicubic-resize", "Mixed_7c-avg-pool"])
def test_fid_inception_mutant_fails(monkeypatch, mutate):
    out, ref = _inception_pool3(monkeypatch, mutate)
    assert not close(out, ref)


# ---- 3D-ResNet-50 (kenshohara 3D-ResNets, DisCo) --------------------------------------------------------------

def _resnet_features(mutate=None, monkeypatch=None):
    from fada.metrics.fvd import resnet3d_50

    g = golden("resnet3d50")
    model = rule_fill(resnet3d_50())
    if mutate is not None:
        mutate(model, monkeypatch)
    with torch.no_grad():
        return model(g["input"]), g["features"]


def test_resnet3d50_reproduces_upstream():
    out, ref = _resnet_features()
    assert close(out, ref), float((out - ref).abs().max())


def _conv1_stride(model, mp):
    model.conv1.stride = (2, 2, 2)


def _avg_stem_pool(model, mp):
    model.maxpool = torch.nn.AvgPool3d(3, 2, 1)


def _max_head_pool(model, mp):
    mp.setattr("fada.metrics.fvd.nn.functional.adaptive_avg_pool3d", F.adaptive_max_pool3d)


def _no_shortcut_bn(model, mp):
    model.layer2[0].downsample[1] = torch.nn.Identity()


@pytest.mark.parametrize("mutate", [_conv1_stride, _avg_stem_pool, _max_head_pool, _no_shortcut_bn],
                         ids=["conv1-temporal-stride-2", "avg-stem-pool", "max-head-pool", "shortcut-without-bn"])
def test_resnet3d50_mutant_fails(monkeypatch, mutate):
    out, ref = _resnet_features(mutate, monkeypatch)
    assert not close(out, ref)


# ---- SyncNet (syncnet_python, python_speech_features) ---------------------------------------------------------

def _sync(frames_rgb=None, model_mutate=None):
    from fada.metrics.syncnet import SyncNetS, SyncNetScorer

    g = golden("syncnet")
    model = rule_fill(SyncNetS())
    if model_mutate is not None:
        model_mutate(model)
    scorer = SyncNetScorer(model=model, vshift=int(g["vshift"]))
    rgb = np.ascontiguousarray(g["frames_bgr"].numpy()[..., ::-1]) if frames_rgb is None else frames_rgb
    v, a = scorer.embeddings(rgb, g["audio_int16"].numpy().astype(np.int16), 16000)
    return g, v, a, scorer


def test_syncnet_mfcc_reproduces_python_speech_features():
    """Our numpy MFCC and the package itself against the golden (both must agree: the package is a test dep)."""
    import python_speech_features

    from fada.metrics.syncnet import mfcc_psf

    g = golden("syncnet")
    pcm = g["audio_int16"].numpy()
    ref = g["mfcc"].numpy()
    scale = np.abs(ref).max()
    assert np.abs(mfcc_psf(pcm, 16000) - ref).max() <= 1e-5 * scale
    assert np.abs(python_speech_features.mfcc(pcm, 16000) - ref).max() <= 1e-5 * scale
    assert np.abs(mfcc_psf(pcm, 16000, ceplifter=0) - ref).max() > 1e-2 * scale   # the lifter matters


def test_syncnet_embeddings_and_scores_reproduce_syncnet_python():
    from fada.metrics.syncnet import sync_offset_search

    g, v, a, scorer = _sync()
    assert close(v, g["lip_embeddings"]) and close(a, g["audio_embeddings"])
    r = sync_offset_search(v, a, scorer.vshift)
    assert r["offset"] == int(g["offset"])
    np.testing.assert_allclose(r["mean_dists"], g["mean_dists"].numpy(), rtol=1e-5)
    assert r["sync_c"] == pytest.approx(float(g["sync_c"]), rel=1e-3)
    assert r["sync_d"] == pytest.approx(float(g["sync_d"]), rel=1e-3)


def test_syncnet_mutants_fail():
    g = golden("syncnet")
    _, v, _, _ = _sync(frames_rgb=g["frames_bgr"].numpy())        # RGB fed where upstream reads BGR
    assert not close(v, g["lip_embeddings"])

    def avg_pool(model):
        model.netcnnlip[3] = torch.nn.AvgPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))

    _, v, _, _ = _sync(model_mutate=avg_pool)
    assert not close(v, g["lip_embeddings"])

    def fc_relu_swap(model):  # BatchNorm and ReLU in the other order in the audio head
        model.netfcaud[1], model.netfcaud[2] = model.netfcaud[2], model.netfcaud[1]

    _, _, a, _ = _sync(model_mutate=fc_relu_swap)
    assert not close(a, g["audio_embeddings"])


# ---- FVD-R preprocessing (DisCo FVD-3DRN50) --------------------------------------------------------------------

MEAN = np.asarray([114.7748, 107.7354, 99.4750], np.float32).reshape(1, 3, 1, 1, 1)


def _clip_differences(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |ours − golden| where the golden's [0, 255] clip did not act, the same after clipping ours)."""
    pix = ours + MEAN
    inside = (pix >= 0) & (pix <= 255)
    clipped = np.clip(pix, 0, 255) - MEAN
    return float(np.abs(ours - ref)[inside].max()), float(np.abs(clipped - ref).max())


def test_fvd_r_preprocessing_reproduces_disco():
    """The golden file clips the resized frames to [0, 255]; DisCo's own resizer (Wangt-CN/DisCo
    tool/metrics/resize.py, make_resizer "PIL", quantize_after False) does not, and neither do we. Everywhere the
    clip does not act we match the golden within 0.5 grey levels; where it acts, clipping ours reproduces it too."""
    from fada.metrics.fvd import resnet_clips

    g = golden("fvd_r_preprocessing")
    ours = resnet_clips(g["video_uint8"].numpy()).numpy()
    ref = g["clips"].numpy()
    assert ours.shape == ref.shape == (2, 3, 16, 112, 112)
    unclipped_gap, clipped_gap = _clip_differences(ours, ref)
    assert unclipped_gap <= 0.5 and clipped_gap <= 0.5
    assert np.array_equal(ours[1, :, 2:], np.repeat(ours[1, :, 1:2], 14, axis=1))  # the tail repeats frame 17


def _bilinear(frame, size):
    import cv2

    return cv2.resize(np.asarray(frame, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)


def _cycled_tail(n, length=16):
    return [start + np.arange(length) % min(length, n - start) for start in range(0, n, length)]


def _short_side_crop(frame, size):
    """The old port: crop a centred square (here 4 pixels tighter), then resize."""
    from PIL import Image

    f = np.asarray(frame, np.float32)[2:-2, 2:-2]
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f[:, :, c])).resize((size, size), Image.BICUBIC))
                     for c in range(3)], -1)


@pytest.mark.parametrize("target,fault", [("pil_bicubic_float", _bilinear), ("segment_indices", _cycled_tail),
                                          ("pil_bicubic_float", _short_side_crop)],
                         ids=["bilinear-resize", "cycled-tail", "crop-before-resize"])
def test_fvd_r_preprocessing_mutant_fails(monkeypatch, target, fault):
    from fada.metrics import fvd

    monkeypatch.setattr(fvd, target, fault)
    g = golden("fvd_r_preprocessing")
    ours = fvd.resnet_clips(g["video_uint8"].numpy()).numpy()
    assert max(_clip_differences(ours, g["clips"].numpy())) > 0.5
