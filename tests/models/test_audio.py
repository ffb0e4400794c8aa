"""Audio: loading, frame counts, the log-mel and wav2vec2 front ends (tiny random model on disk), the projection."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from fada.config.model import AudioConfig
from fada.errors import FadaError, MissingFileError
from fada.models.audio import (
    AudioProjection,
    MelFrontEnd,
    Wav2Vec2FrontEnd,
    build_audio_frontend,
    build_audio_projection,
    frames_for_duration,
    load_audio,
    window_features,
)

SR, FPS = 16000, 25


def _tone_burst(num_frames, on_frames, sr=SR, fps=FPS, freq=440.0, amp=0.5):
    y = np.zeros(num_frames * sr // fps, np.float32)
    a, b = on_frames[0] * sr // fps, (on_frames[-1] + 1) * sr // fps
    t = np.arange(a, b) / sr
    y[a:b] = amp * np.sin(2 * np.pi * freq * t)
    return y


# ---------------------------------------------------------------------------------------------------- lengths


def test_frames_for_duration():
    assert frames_for_duration(16000, 16000, 25) == 25
    assert frames_for_duration(16000 * 3 + 639, 16000, 25) == 75  # floor: partial frame dropped
    assert frames_for_duration(16000 * 3 + 640, 16000, 25) == 76
    assert frames_for_duration(44100 * 2, 44100, 30) == 60
    assert frames_for_duration(0, 16000, 25) == 0


def test_window_features_matches_manual_gather():
    feats = torch.randn(6, 2, 3)
    w = 2
    out = window_features(feats, w)
    assert out.shape == (6, 5, 2, 3)
    for f in range(6):
        for k, off in enumerate(range(-w, w + 1)):
            src = min(max(f + off, 0), 5)
            assert torch.equal(out[f, k], feats[src])
    assert window_features(feats, 0).shape == (6, 1, 2, 3)


# ---------------------------------------------------------------------------------------------------- mel


def test_mel_shape_and_determinism():
    fe = build_audio_frontend(AudioConfig(kind="mel", n_mels=40, window=2))
    assert isinstance(fe, MelFrontEnd) and fe.feature_shape == (5, 1, 40)
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(SR * 2)).astype(np.float32)
    n = frames_for_duration(len(y), SR, FPS)
    a = fe.features(y, n, FPS)
    assert a.shape == (50, 5, 1, 40) and a.dtype == torch.float32
    assert torch.equal(a, fe.features(y.copy(), n, FPS))
    assert torch.isfinite(a).all()
    # other frame rates give exactly the asked count
    for fps in (24, 30, 60):
        assert fe.features(y, frames_for_duration(len(y), SR, fps), fps).shape[0] == 2 * fps
    # asking for more frames than the audio has pads with silence
    assert fe.features(y, 60, FPS).shape == (60, 5, 1, 40)
    assert fe.features(y, 0, FPS).shape == (0, 5, 1, 40)


def test_mel_silence_is_constant_floor():
    fe = MelFrontEnd(SR, n_mels=32, window=1)
    f = fe.features(np.zeros(SR, np.float32), 25, FPS)
    assert torch.all(f == f.flatten()[0])
    assert f.flatten()[0].item() == pytest.approx(-1.0)
    loud = fe.features(0.3 * np.random.default_rng(1).standard_normal(SR).astype(np.float32), 25, FPS)
    assert loud.mean() > 0


def test_mel_tone_burst_alignment():
    fe = MelFrontEnd(SR, n_mels=40, window=2)
    on = list(range(10, 15))
    y = _tone_burst(40, on)
    feat = fe.features(y, 40, FPS)[:, 2, 0]  # centre of the window: frame f's own features
    # feature energy: total mel power, undoing the fixed dB map
    energy_feat = (10 ** ((feat.double() * 50 - 50) / 10)).sum(-1).numpy()
    # independent energy: mean square of the samples inside [f/fps, (f+1)/fps)
    spf = SR // FPS
    energy_wave = np.array([np.mean(y[f * spf:(f + 1) * spf] ** 2) for f in range(40)])
    assert sorted(np.argsort(energy_feat)[-5:].tolist()) == on
    assert set(np.nonzero(energy_wave)[0].tolist()) == set(on)
    ratio_db = 10 * np.log10(energy_feat[on].min() / np.delete(energy_feat, on).max())
    assert ratio_db > 10  # neighbours see at most half an STFT window of leakage
    far = [f for f in range(40) if f < 8 or f > 16]
    assert torch.all(feat[far] == -1.0)  # silence stays silence
    # the window around frame 12 sees the burst at every offset; the window around frame 3 sees none
    win = fe.features(y, 40, FPS)
    assert torch.all(win[12].amax(dim=(-1, -2)) > 0) and torch.all(win[3] == -1.0)


# ---------------------------------------------------------------------------------------------------- wav2vec2


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    root = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(cfg).save_pretrained(root)
    return root


def test_wav2vec2_frame_counts(tiny_w2v):
    fe = build_audio_frontend(AudioConfig(kind="wav2vec2", path=str(tiny_w2v), window=2))
    assert isinstance(fe, Wav2Vec2FrontEnd)
    assert fe.feature_shape == (5, 3, 32)
    assert fe.stride == 320 and fe.receptive_field == 400
    rng = np.random.default_rng(0)
    for samples in (700, 640 * 7 + 3, SR * 2 + 17):
        y = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        n = frames_for_duration(samples, SR, FPS)
        out = fe.features(y, n, FPS)
        assert out.shape == (n, 5, 3, 32)
        assert torch.isfinite(out).all()
    y = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    assert torch.equal(fe.features(y, 25, FPS), fe.features(y, 25, FPS))  # eval mode: deterministic
    assert fe.features(y, 30, 30).shape == (30, 5, 3, 32)
    assert not any(p.requires_grad for p in fe.model.parameters())


def test_wav2vec2_chunked_long_audio(tiny_w2v):
    fe = Wav2Vec2FrontEnd(tiny_w2v, window=1, chunk_seconds=0.5, context_seconds=0.2)
    y = (0.1 * np.random.default_rng(2).standard_normal(SR * 2)).astype(np.float32)
    hs = fe.hidden_states(y)
    assert hs.shape == ((len(y) - 400) // 320 + 1, 3, 32)  # chunks stitch to the unchunked frame count
    out = fe.features(y, 50, FPS)
    assert out.shape == (50, 3, 3, 32) and torch.isfinite(out).all()


def test_wav2vec2_interpolation_positions(tiny_w2v):
    """At 50 Hz wav2vec2 and 25 fps, frame f's centre (f+0.5)/25 s falls between outputs 2f and 2f+1 (+ offset)."""
    fe = Wav2Vec2FrontEnd(tiny_w2v, window=0)
    y = (0.1 * np.random.default_rng(3).standard_normal(SR)).astype(np.float32)
    used = y[: 640 * 10 + 400].astype(np.float64)  # the frames' span plus one receptive field
    hs = fe.hidden_states(((used - used.mean()) / np.sqrt(used.var() + 1e-7)).astype(np.float32))
    out = fe.features(y, 10, FPS)[:, 0]
    # centre of frame f in wav2vec2 index units: ((f+0.5)*640 - 200)/320 = 2f + 0.375
    f = 4
    expect = hs[2 * f] * 0.625 + hs[2 * f + 1] * 0.375
    assert torch.allclose(out[f], expect, atol=1e-5)


def test_wav2vec2_missing_folder(tmp_path):
    with pytest.raises(MissingFileError) as e:
        build_audio_frontend(AudioConfig(kind="wav2vec2", path=str(tmp_path / "nope")))
    assert str(tmp_path / "nope" / "config.json") in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FadaError):
        build_audio_frontend(AudioConfig(kind="wav2vec2", path=None))


def test_wav2vec2_missing_weights(tiny_w2v, tmp_path):
    (tmp_path / "config.json").write_text((tiny_w2v / "config.json").read_text())
    with pytest.raises(MissingFileError) as e:
        build_audio_frontend(AudioConfig(kind="wav2vec2", path=str(tmp_path)))
    assert "model.safetensors" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------- projection


def test_audio_projection_shape_and_round_trip(tmp_path):
    cfg = AudioConfig(kind="mel", n_mels=16, window=2, n_tokens=4, hidden_dim=32)
    proj = build_audio_projection(cfg, (5, 3, 16), out_dim=24)
    x = torch.randn(2, 7, 5, 3, 16)
    y = proj(x)
    assert y.shape == (2, 7, 4, 24)
    assert torch.allclose(y.mean(-1), torch.zeros(2, 7, 4), atol=1e-5)  # LayerNorm at the end
    (y * torch.randn_like(y)).sum().backward()
    assert proj.layer_logits.grad is not None and proj.layer_logits.grad.abs().sum() > 0  # all layers used
    with torch.no_grad():
        proj.layer_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    proj.save_pretrained(tmp_path / "audio_proj")
    assert (tmp_path / "audio_proj" / "config.json").is_file()
    loaded = AudioProjection.from_pretrained(tmp_path / "audio_proj")
    keys = ["feature_layers", "feature_dim", "window", "n_tokens", "hidden_dim", "out_dim"]
    assert {k: loaded.config[k] for k in keys} == {k: proj.config[k] for k in keys}
    with torch.no_grad():
        assert torch.equal(loaded(x), proj(x))
    with pytest.raises(ValueError):
        proj(torch.randn(2, 7, 3, 3, 16))


# ---------------------------------------------------------------------------------------------------- files


def test_load_audio_wav_resamples_and_mixes(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 200 * t), 0.5 * np.sin(2 * np.pi * 200 * t)], axis=1)
    sf.write(tmp_path / "a.wav", stereo, 8000)
    y = load_audio(tmp_path / "a.wav", 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    assert 0.3 < np.abs(y).max() < 0.6
    sf.write(tmp_path / "b.flac", stereo[:, 0], 8000)
    assert load_audio(tmp_path / "b.flac", 8000).shape == (8000,)


def test_load_audio_reads_m4a_without_an_ffmpeg_program(tmp_path, monkeypatch):
    """m4a (AAC in mp4) is what phones record: libsndfile cannot read it and librosa's fallback needs an ffmpeg
    program this machine lacks, so it is decoded with PyAV's own FFmpeg."""
    import av

    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg program, whatever the machine has
    rate, secs = 44100, 1.0
    t = np.arange(int(rate * secs)) / rate
    tone = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1024  # AAC's priming and last frame
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 440) < 5
    assert 0.25 < np.abs(y[2000:-2000]).max() < 0.55


def test_load_audio_errors(tmp_path):
    with pytest.raises(MissingFileError):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(FadaError) as e:
        load_audio(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(FadaError) as e:
        load_audio(empty)
    assert str(empty) in str(e.value)
    zero = tmp_path / "zero.mp3"
    zero.write_bytes(b"")
    with pytest.raises(FadaError):
        load_audio(zero)


def test_wav2vec2_ctc_checkpoint_loads_quietly(tmp_path, capfd):
    """Users have CTC checkpoints (wav2vec2-base-960h): the encoder loads from them, the lm_head is ignored
    without a report, and the features are the CTC model's own encoder states (its weights, not a fresh init)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(3)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2,
                         num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, vocab_size=12)
    ctc = Wav2Vec2ForCTC(cfg).eval()
    ctc.save_pretrained(tmp_path / "ctc")
    capfd.readouterr()
    fe = Wav2Vec2FrontEnd(tmp_path / "ctc", window=0)
    out = capfd.readouterr()
    assert "lm_head" not in out.out + out.err and "UNEXPECTED" not in out.out + out.err
    assert "Loading weights" not in out.err
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    norm = ((wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)).astype(np.float32)
    norm = norm[:(len(norm) - fe.receptive_field) // fe.stride * fe.stride + fe.receptive_field]  # whole frames
    loaded = Wav2Vec2ForCTC.from_pretrained(tmp_path / "ctc").eval()  # transformers' own load of the same file
    with torch.no_grad():
        ref = torch.stack(loaded.wav2vec2(torch.from_numpy(norm)[None], output_hidden_states=True).hidden_states,
                          2)[0]
        fresh = torch.stack(ctc.wav2vec2(torch.from_numpy(norm)[None], output_hidden_states=True).hidden_states,
                            2)[0]
    torch.testing.assert_close(fe.hidden_states(norm), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fe.hidden_states(norm), fresh, rtol=0.05, atol=0.02)  # the saved weights
