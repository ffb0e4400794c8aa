"""FID Inception-v3: upstream (pytorch-fid / torchvision) key layout, loading, preprocessing, 2048-d features."""

import numpy as np
import pytest
import torch

from fada.errors import FadaError, MissingFileError
from fada.metrics.inception import FIDExtractor, FIDInceptionV3, frames_to_unit_tensor, load_fid_inception
from fada.metrics.weights import FID_INCEPTION

# torchvision Inception3 has 27,161,264 parameters (1000 classes, with the aux head of 3,326,696);
# the FID file is built with num_classes=1008 and aux_logits=False.
FID_PARAMS = 27_161_264 - 3_326_696 + 8 * 2048 + 8


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_key_layout_matches_pytorch_fid(net):
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == FID_PARAMS
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.bn.bias": (384,),
        "fc.weight": (1008, 2048),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert not any(".bias" in k and ".conv." in k for k in sd)  # BasicConv2d convs have no bias


def test_loads_plain_state_dict_and_extracts_2048(net, tmp_path):
    # pytorch-fid's file: a plain state dict, saved by an old torch without num_batches_tracked
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / FID_INCEPTION)
    ext = FIDExtractor.from_weights_dir(tmp_path)
    for k, v in net.state_dict().items():
        assert torch.equal(ext.model.state_dict()[k], v), k
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    feats = ext.features(frames)
    assert feats.shape == (2, 2048) and feats.dtype == np.float64
    assert np.all(feats >= 0)  # after ReLU + average pool
    assert not np.allclose(feats[0], feats[1], rtol=1e-3, atol=0.0)  # different images, different features


def test_preprocessing_is_pytorch_fid(net):
    frames = np.zeros((1, 10, 12, 3), np.uint8)
    frames[0, :, :, 0] = 255
    x = frames_to_unit_tensor(frames)
    assert x.shape == (1, 3, 10, 12) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    y = net.preprocess(x)
    assert y.shape == (1, 3, 299, 299)
    assert torch.allclose(y[0, 0], torch.ones(299, 299)) and torch.allclose(y[0, 1], -torch.ones(299, 299))


def test_wrong_file_is_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "x.pth")
    with pytest.raises(FadaError, match="missing key"):
        load_fid_inception(tmp_path / "x.pth")
    with pytest.raises(MissingFileError, match="--weights-dir"):
        FIDExtractor.from_weights_dir(tmp_path)
