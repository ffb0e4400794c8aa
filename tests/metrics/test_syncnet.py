"""SyncNet (syncnet_python layout), its MFCC front end, windowing and the Sync-C / Sync-D offset search."""

import numpy as np
import pytest
import torch

from fada.errors import FadaError
from fada.metrics.syncnet import (SyncNetS, SyncNetScorer, load_syncnet, mel_filterbank_psf, mfcc_psf,
                                  prepare_syncnet_inputs, sync_offset_search)
from fada.metrics.weights import SYNCNET


def test_key_layout_and_embedding_dims(tmp_path):
    torch.manual_seed(0)
    net = SyncNetS().eval()
    sd = net.state_dict()
    for key, shape in {
        "netcnnaud.0.weight": (64, 1, 3, 3),
        "netcnnaud.18.weight": (512, 256, 5, 4),
        "netfcaud.1.running_mean": (512,),
        "netfcaud.3.weight": (1024, 512),
        "netcnnlip.0.weight": (96, 3, 5, 7, 7),
        "netcnnlip.18.weight": (512, 256, 1, 6, 6),
        "netfclip.3.bias": (1024,),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    # syncnet_v2.model: a plain state dict with the bare keys of S (SyncNetInstance.loadParameters copies each
    # into self.__S__.state_dict()[name]), no num_batches_tracked; a file saved from the instance itself carries
    # the __S__. prefix, which loads too
    for prefix in ("", "__S__."):
        torch.save({prefix + k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
                   tmp_path / SYNCNET)
        loaded = load_syncnet(tmp_path / SYNCNET)
        for k, v in sd.items():
            assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        assert loaded.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert loaded.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255).shape == (2, 1024)


def test_filterbank_matches_upstream_loops():
    nfilt, nfft, sr = 26, 512, 16000
    hz2mel = lambda hz: 2595 * np.log10(1 + hz / 700.0)  # noqa: E731
    mel2hz = lambda mel: 700 * (10 ** (mel / 2595.0) - 1)  # noqa: E731
    bins = np.floor((nfft + 1) * mel2hz(np.linspace(hz2mel(0), hz2mel(sr / 2), nfilt + 2)) / sr)
    ref = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            ref[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            ref[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    np.testing.assert_allclose(mel_filterbank_psf(nfilt, nfft, sr), ref)


def test_mfcc_framing_energy_and_scale():
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal(16000) * 3000)
    m = mfcc_psf(x)
    assert m.shape == (1 + int(np.ceil((16000 - 400) / 160)), 13)  # 99 frames at 100 Hz
    pre = np.append(x[0], x[1:] - 0.97 * x[:-1])
    e0 = np.sum(np.abs(np.fft.rfft(pre[:400], 512)) ** 2) / 512
    assert m[0, 0] == pytest.approx(np.log(e0))  # c0 = log frame energy
    m2 = mfcc_psf(2 * x)
    np.testing.assert_allclose(m2[:, 1:], m[:, 1:], atol=1e-9)  # scale only moves c0
    np.testing.assert_allclose(m2[:, 0], m[:, 0] + np.log(4), atol=1e-9)


def test_mfcc_equals_python_speech_features():
    import python_speech_features as psf  # a test dependency ([dev] extra): never skipped
    x = np.round(np.random.default_rng(1).standard_normal(12345) * 2000)
    np.testing.assert_allclose(mfcc_psf(x, 16000), psf.mfcc(x, 16000), rtol=1e-10, atol=1e-10)


def test_windowing_follows_syncnet_instance():
    frames = np.zeros((12, 64, 64, 3), np.uint8)
    frames[..., 0] = 255  # red in RGB -> channel 2 in BGR
    audio = np.zeros(int(12 / 25 * 16000), np.float32)
    vid, aud = prepare_syncnet_inputs(frames, audio, 16000, fps=25)
    assert vid.shape == (7, 3, 5, 224, 224) and aud.shape == (7, 1, 13, 20)  # min_length 12 -> 7 windows
    assert float(vid[:, 2].min()) == 255.0 and float(vid[:, 0].max()) == 0.0  # BGR, raw 0..255
    # other sample rates and frame rates are converted to 16 kHz / 25 fps
    vid2, aud2 = prepare_syncnet_inputs(np.repeat(frames, 2, 0), np.zeros(int(0.48 * 48000)), 48000, fps=50)
    assert vid2.shape == vid.shape and aud2.shape == aud.shape
    with pytest.raises(FadaError, match="at least 6 frames"):
        prepare_syncnet_inputs(frames[:5], audio, 16000)


def test_offset_search_known_shift():
    rng = np.random.default_rng(2)
    n, k = 40, 3
    base = torch.tensor(rng.standard_normal((n + 10, 16)), dtype=torch.float32)
    vid = base[5:5 + n]
    aud = base[5 + k:5 + k + n]  # audio window i + ... : vid[i] == aud[i - k]
    res = sync_offset_search(vid, aud, vshift=15)
    assert res["offset"] == k
    # matched windows give 0; the first k video windows meet the zero padding (as upstream calc_pdist)
    assert res["sync_d"] == pytest.approx(float(vid[:k].norm(dim=1).sum()) / n, abs=1e-3)
    assert res["sync_c"] > 1.0
    assert res["mean_dists"].shape == (31,)
    assert sync_offset_search(aud, vid)["offset"] == -k


def test_scorer_end_to_end_random_weights(tmp_path):
    torch.manual_seed(0)
    torch.save(dict(SyncNetS().state_dict()), tmp_path / SYNCNET)  # the published file's bare keys
    scorer = SyncNetScorer.from_weights_dir(tmp_path, vshift=3)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (11, 48, 48, 3), dtype=np.uint8)
    audio = rng.standard_normal(int(11 / 25 * 16000)).astype(np.float32) * 0.1
    res = scorer.score(frames, audio, 16000)
    assert set(res) >= {"sync_c", "sync_d", "offset", "n_windows"}
    assert res["n_windows"] == 6 and -3 <= res["offset"] <= 3
    assert res["sync_d"] >= 0 and res["sync_c"] >= 0
