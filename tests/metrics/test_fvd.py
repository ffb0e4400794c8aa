"""FVD-R (3D-ResNet-50, kenshohara checkpoint layout) and FVD-I (TorchScript I3D) extractors."""

import warnings

import numpy as np
import pytest
import torch

from fada.errors import FadaError
from fada.metrics.fvd import (ACTIVITYNET_MEAN, FVDExtractor, I3DExtractor, fvd_from_videos, i3d_clip,
                              load_resnet3d_50, resnet3d_50, resnet_clips, segment_indices)
from fada.metrics.weights import FVD_I3D, FVD_RESNET50


def _checkpoint(model, arch="resnet-50"):
    """The 3D-ResNets file structure: DataParallel prefix, no num_batches_tracked, optimizer state."""
    sd = {"module." + k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return {"epoch": 200, "arch": arch, "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}


def test_key_layout():
    sd = resnet3d_50().state_dict()
    for key, shape in {
        "conv1.weight": (64, 3, 7, 7, 7),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1, 1),
        "layer1.0.downsample.1.running_mean": (256,),
        "layer2.3.conv2.weight": (128, 128, 3, 3, 3),
        "layer3.5.bn3.weight": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1, 1),
        "fc.weight": (400, 2048),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert "layer1.1.downsample.0.weight" not in sd


def test_full_resnet50_loads_upstream_checkpoint_and_gives_2048(tmp_path):
    torch.manual_seed(0)
    model = resnet3d_50().eval()
    torch.save(_checkpoint(model), tmp_path / FVD_RESNET50)
    ext = FVDExtractor.from_weights_dir(tmp_path)
    for k, v in model.state_dict().items():
        assert torch.equal(ext.model.state_dict()[k], v), k
    video = np.random.default_rng(0).integers(0, 256, (16, 60, 80, 3), dtype=np.uint8)
    f = ext.features(video)
    assert f.shape == (2048,) and np.isfinite(f).all() and f.dtype == np.float64


def test_wrong_arch_and_bare_state_dict(tmp_path):
    small = resnet3d_50(width=0.125)
    torch.save(_checkpoint(small, arch="resnet-34"), tmp_path / "a.pth")
    with pytest.raises(FadaError, match="resnet-34"):
        load_resnet3d_50(tmp_path / "a.pth", width=0.125)
    torch.save(small.state_dict(), tmp_path / "b.pth")
    assert load_resnet3d_50(tmp_path / "b.pth", width=0.125).feature_dim == 256
    with pytest.raises(FadaError, match="shape mismatch"):
        load_resnet3d_50(tmp_path / "b.pth")


def test_segments_repeat_the_last_frame():
    segs = segment_indices(35)
    assert [s.tolist()[:3] for s in segs] == [[0, 1, 2], [16, 17, 18], [32, 33, 34]]
    assert segs[2].tolist() == [32, 33] + [34] * 14  # DisCo pads a short tail with its last frame
    assert segment_indices(5)[0].tolist() == [0, 1, 2, 3] + [4] * 12
    assert [len(x) for x in segment_indices(32)] == [16, 16]
    with pytest.raises(FadaError):
        segment_indices(0)


def test_resnet_preprocessing_squashes_to_112_without_crop():
    video = np.zeros((20, 90, 160, 3), np.uint8)
    video[..., 0] = 200
    video[:, :, :80, 1] = 255  # left half green: no crop keeps both halves, squashed to 56 columns each
    clips = resnet_clips(video)
    assert clips.shape == (2, 3, 16, 112, 112)
    assert torch.allclose(clips[:, 0], torch.tensor(200.0 - ACTIVITYNET_MEAN[0]))
    assert torch.allclose(clips[:, 2], torch.tensor(-ACTIVITYNET_MEAN[2]))
    g = clips[0, 1, 0] + ACTIVITYNET_MEAN[1]
    assert float(g[:, :54].min()) == pytest.approx(255, abs=1e-3) and float(g[:, 58:].max()) == pytest.approx(0, abs=1e-3)
    # bicubic overshoot at the edge is kept, as in DisCo's unclipped resizer
    assert float(g.max()) > 255.5 and float(g.min()) < -0.5


def test_segment_mean_and_fvd_with_small_width():
    torch.manual_seed(0)
    ext = FVDExtractor(model=resnet3d_50(width=0.125))
    rng = np.random.default_rng(1)
    video = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    segs = ext.segment_features(video)
    assert segs.shape == (2, 256)
    np.testing.assert_allclose(ext.features(video), segs.mean(0))
    vids = [rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    assert fvd_from_videos(ext, vids, vids) == pytest.approx(0.0, abs=1e-6)


class _FakeI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: same call signature, 400-d output that reports what it was given."""

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        b = x.shape[0]
        out = torch.zeros(b, 400)
        flat = x.reshape(b, -1)
        out[:, 0] = flat.min(1).values
        out[:, 1] = flat.max(1).values
        out[:, 2] = float(x.shape[2])
        out[:, 3] = float(x.shape[3])
        out[:, 4] = float(x.shape[4])
        out[:, 5] = float(rescale) + 2.0 * float(resize) + 4.0 * float(return_features)
        return out


def test_i3d_follows_stylegan_v(tmp_path):
    """StyleGAN-V's call: uint8 at the video's own size, first 16 frames, rescale and resize by the detector."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_FakeI3D()).save(str(tmp_path / FVD_I3D))
    ext = I3DExtractor.from_weights_dir(tmp_path)
    video = np.zeros((40, 100, 120, 3), np.uint8)
    video[:, :50] = 255
    video[16:] = 7  # after the first clip: never read
    f = ext.features(video)
    assert f.shape == (400,)
    assert f[0] == 0.0 and f[1] == 255.0  # raw 0..255
    assert tuple(f[2:5]) == (16, 100, 120)
    assert f[5] == 7.0  # rescale=True, resize=True, return_features=True
    assert i3d_clip(video).dtype == torch.uint8 and i3d_clip(video).shape == (1, 3, 16, 100, 120)
    with pytest.raises(FadaError, match="16 frames"):
        ext.features(video[:15])


def test_fvd_i_uses_the_biased_covariance():
    from fada.metrics.frechet import frechet_from_features

    class Ext:
        name = "fvd_i"

        def features(self, v):
            return v.reshape(-1)[:3].astype(np.float64)

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 1
    d = fvd_from_videos(Ext(), list(a), list(b))
    assert d == pytest.approx(frechet_from_features(a, b, ddof=0))
    assert d != pytest.approx(frechet_from_features(a, b, ddof=1))


def test_i3d_not_torchscript(tmp_path):
    (tmp_path / FVD_I3D).write_bytes(b"not a zip")
    with pytest.raises(FadaError, match="TorchScript"):
        I3DExtractor.from_weights_dir(tmp_path)
