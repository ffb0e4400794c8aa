"""wav2vec2 front end, mode 'hallo': Hallo's audio features (AudioProcessor.preprocess + Wav2VecModel +
process_audio_emb at commit 8fd7c57), checked against a reference written here step by step from transformers'
submodules, on a tiny random Wav2Vec2Model saved to a temporary folder."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fada.config.model import AudioConfig
from fada.config.validate import from_dict, to_dict
from fada.errors import ConfigError, FadaError
from fada.models.audio import Wav2Vec2FrontEnd, build_audio_frontend, frames_for_duration, hallo_frame_count

SR = 16000
# Features are O(1) (layer-normed). torch's linear interpolation places its samples in float32 (position
# i·(T-1)/(N-1) rounded, ~1e-6 off at 64 frames); the hand-written one here in float64: after the feature
# projection's LayerNorm that is up to ~3e-5. With torch's own interpolation the reference agrees to ~1e-6.
TOL = dict(rtol=1e-4, atol=1e-4)
TIGHT = dict(rtol=1e-5, atol=2e-6)


def _tiny_folder(root, do_normalize=True, seed=0):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    assert not cfg.do_stable_layer_norm  # wav2vec2-base-960h's layout, the one Hallo uses
    Wav2Vec2Model(cfg).save_pretrained(root)
    # wav2vec2-base-960h's preprocessor_config.json
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=do_normalize,
                             return_attention_mask=False).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def w2v(tmp_path_factory):
    return _tiny_folder(tmp_path_factory.mktemp("w2v_hallo"))


@pytest.fixture(scope="module")
def w2v_raw(tmp_path_factory):
    return _tiny_folder(tmp_path_factory.mktemp("w2v_hallo_raw"), do_normalize=False, seed=1)


# ------------------------------------------------------------------------------------------ the reference


def _lerp_aligned(x: torch.Tensor, n: int) -> torch.Tensor:
    """(T, C) -> (n, C): linear interpolation with the end points aligned (output i at input i·(T-1)/(n-1)),
    computed by hand in float64."""
    t = x.shape[0]
    pos = np.arange(n, dtype=np.float64) * ((t - 1) / (n - 1) if n > 1 else 0.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, t - 1)
    frac = torch.from_numpy(pos - lo)[:, None]
    xd = x.double()
    return (xd[lo] * (1 - frac) + xd[hi] * frac).float()


def hallo_reference(folder, wav: np.ndarray, fps: int, clip_length: int, layers=slice(1, None),
                    interp="hand"):
    """Hallo's (frames, L, D) embedding and its unpadded length, recomputed from transformers' pieces:
    the feature extractor's normalisation, ceil frame count, zero padding to the clip length, the CNN encoder,
    interpolation to the frame count, feature projection, positional conv + layer norm, then layer by layer."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    fx = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    audio = np.squeeze(fx(wav, sampling_rate=SR).input_values)
    seq_len = math.ceil(len(audio) / SR * fps)
    length = seq_len
    audio = torch.from_numpy(audio).float()
    if clip_length > 0 and seq_len % clip_length:
        audio = torch.cat([audio, torch.zeros((clip_length - seq_len % clip_length) * (SR // fps))])
        seq_len += clip_length - seq_len % clip_length
    model = Wav2Vec2Model.from_pretrained(folder).eval()
    with torch.no_grad():
        cnn = model.feature_extractor(audio[None])[0].T  # (T, C)
        if interp == "hand":
            x = _lerp_aligned(cnn, seq_len)
        else:  # torch's: "aligned" is Hallo's call (align_corners=True), "unaligned" the default a port might use
            x = torch.nn.functional.interpolate(cnn.T[None], size=seq_len, mode="linear",
                                                align_corners=interp == "aligned")[0].T
        h, _ = model.feature_projection(x[None])
        enc = model.encoder
        h = enc.layer_norm(h + enc.pos_conv_embed(h))
        states = [h]
        for layer in enc.layers:
            out = layer(h, attention_mask=None)
            h = out[0] if isinstance(out, tuple) else out
            states.append(h)
    emb = torch.stack(states[layers], dim=1).squeeze(0)  # (L, seq_len, D), as Hallo stacks them
    return emb.permute(1, 0, 2), length  # its rearrange "b s d -> s b d": (seq_len, L, D)


def hallo_windows(emb: torch.Tensor, w: int = 2) -> torch.Tensor:
    """scripts/inference.py process_audio_emb: for every frame, frames i-2..i+2 clamped to the sequence."""
    n = emb.shape[0]
    return torch.stack([torch.stack([emb[min(max(i + j, 0), n - 1)] for j in range(-w, w + 1)]) for i in range(n)])


def _speech(samples, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    y = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(samples)
    return (y + 0.02).astype(np.float32)  # a DC offset: the normalisation has something to remove


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("samples,fps,clip,frames", [
    (SR + 100, 25, 16, 32),     # 1.00625 s: 25 whole frames, Hallo's ceil 26, padded to 32
    (4480, 25, 16, 16),         # 7 whole frames, but Hallo's float ceil gives 8 -> 16
    (4480, 25, 0, 8),           # no padding: the float quirk shows (8 frames for 7)
    (640 * 16, 25, 16, 16),     # exactly one clip: no padding
    (SR, 30, 16, 32),           # 30 fps: padding of 533 (= 16000 // 30) samples per frame
    (SR * 2 + 333, 25, 16, 64),
])
def test_hallo_mode_matches_reference(w2v, samples, fps, clip, frames):
    wav = _speech(samples)
    fe = Wav2Vec2FrontEnd(w2v, window=2, mode="hallo", clip_frames=clip)
    assert fe.feature_shape == (5, 3, 32)  # hidden_states[1:]: the layers only
    ref, length = hallo_reference(w2v, wav, fps, clip)
    assert ref.shape[0] == frames == fe.hallo_frames(samples, fps)
    assert length == hallo_frame_count(samples, SR, fps)
    seq = fe.hallo_sequence(wav, fps)
    torch.testing.assert_close(seq, ref, **TOL)
    torch.testing.assert_close(seq, hallo_reference(w2v, wav, fps, clip, interp="aligned")[0], **TIGHT)
    # fada asks for the whole frames: Hallo's first rows, windows clamped at Hallo's last (padded) frame
    n = frames_for_duration(samples, SR, fps)
    assert n <= length <= frames
    torch.testing.assert_close(fe.frame_features(wav, n, fps), ref[:n], **TOL)
    win = fe.features(wav, n, fps)
    assert win.shape == (n, 5, 3, 32) and win.dtype == torch.float32
    torch.testing.assert_close(win, hallo_windows(ref)[:n], **TOL)


def test_hallo_reference_is_sensitive(w2v):
    """The parity above would fail for the usual mistakes: fada's mode, align_corners=False, all hidden states
    (or the wrong ones), no clip padding, no normalisation, windows clamped at the last asked frame."""
    wav = _speech(SR + 100, seed=3)
    fe = Wav2Vec2FrontEnd(w2v, window=2, mode="hallo", clip_frames=16)
    seq = fe.hallo_sequence(wav, 25)
    ref, _ = hallo_reference(w2v, wav, 25, 16)
    err = (seq - ref).abs().max().item()
    assert err < 1e-5

    def gap(other):
        return (seq[:25] - other[:25]).abs().max().item()

    assert gap(hallo_reference(w2v, wav, 25, 16, interp="unaligned")[0]) > 1e-2
    assert gap(hallo_reference(w2v, wav, 25, 16, layers=slice(0, -1))[0]) > 1e-2
    assert gap(hallo_reference(w2v, wav, 25, 0)[0]) > 1e-3  # the clip padding reaches every frame (attention)
    raw = wav - wav.mean()
    assert gap(hallo_reference(w2v, raw / raw.std() * 3, 25, 16)[0]) < 1e-4  # invariant to gain and offset ...
    fe_raw = Wav2Vec2FrontEnd(w2v, window=2, mode="hallo", clip_frames=16)
    fe_raw.do_normalize = False
    assert gap(fe_raw.hallo_sequence(wav, 25)) > 1e-2  # ... because it normalises
    fada = Wav2Vec2FrontEnd(w2v, window=2)
    assert fada.feature_shape == (5, 4, 32)
    assert (fada.frame_features(wav, 25, 25)[:, 1:] - ref[:25]).abs().max() > 1e-2
    # the last rows' windows read the partial and padded frames, not repeats of frame 24
    win = fe.features(wav, 25, 25)
    assert torch.equal(win[24, 3], seq[25]) and torch.equal(win[24, 4], seq[26])
    assert (seq[25] - seq[24]).abs().max() > 1e-3


def test_hallo_mode_do_normalize_false(w2v_raw):
    wav = _speech(SR // 2, seed=5)
    fe = Wav2Vec2FrontEnd(w2v_raw, window=1, mode="hallo", clip_frames=16)
    assert fe.do_normalize is False
    ref, _ = hallo_reference(w2v_raw, wav, 25, 16)
    torch.testing.assert_close(fe.hallo_sequence(wav, 25), ref, **TOL)
    torch.testing.assert_close(fe.features(wav, 12, 25), hallo_windows(ref, 1)[:12], **TOL)


def test_hallo_frame_count():
    assert hallo_frame_count(SR + 100, SR, 25) == 26 and frames_for_duration(SR + 100, SR, 25) == 25
    assert hallo_frame_count(SR, SR, 25) == 25 == frames_for_duration(SR, SR, 25)
    assert hallo_frame_count(4480, SR, 25) == 8 and frames_for_duration(4480, SR, 25) == 7  # float quirk, kept
    assert hallo_frame_count(0, SR, 25) == 0
    lengths = np.arange(1, 20 * SR, 7)
    exact_ceil = -(-lengths * 25 // SR)
    hallo = np.array([hallo_frame_count(s, SR, 25) for s in lengths])
    assert np.all((hallo == exact_ceil) | (hallo == exact_ceil + 1))
    assert np.all(hallo >= lengths * 25 // SR)  # never fewer frames than fada asks for


def test_hallo_mode_frame_requests(w2v):
    fe = Wav2Vec2FrontEnd(w2v, window=2, mode="hallo", clip_frames=16)
    assert fe.whole_utterance and not Wav2Vec2FrontEnd(w2v).whole_utterance
    wav = _speech(SR + 100, seed=7)
    assert fe.features(wav, 0, 25).shape == (0, 5, 3, 32)
    # more frames than Hallo's padded count: padded further by the same rule, to the next clip multiple
    assert fe.hallo_frames(len(wav), 25, 40) == 48
    more = fe.features(wav, 40, 25)
    assert more.shape == (40, 5, 3, 32) and torch.isfinite(more).all()
    # shorter than one CNN step (Hallo would fail): zero-padded, one frame
    short = Wav2Vec2FrontEnd(w2v, window=2, mode="hallo", clip_frames=0)
    assert short.hallo_sequence(_speech(300), 25).shape == (1, 3, 32)
    # every row depends on the whole utterance: the first half alone gives other features
    half = fe.frame_features(wav[: SR // 2], 12, 25)
    assert (half - fe.frame_features(wav, 12, 25)).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ config, identity


def test_identity_and_cache_key_change_with_mode(w2v):
    from fada.data.dataset import cache_models_key

    fada = build_audio_frontend(AudioConfig(kind="wav2vec2", path=str(w2v)))
    assert fada.mode == "fada" and "mode" not in fada.identity()  # unchanged: existing caches stay valid
    assert set(fada.identity()) == {"audio", "config", "do_normalize", "sample_rate", "weights"}
    hallo = build_audio_frontend(AudioConfig(kind="wav2vec2", path=str(w2v), wav2vec2_mode="hallo"))
    assert hallo.mode == "hallo" and hallo.clip_frames == 16
    assert hallo.identity() == {**fada.identity(), "mode": "hallo", "clip_frames": 16}
    hallo0 = build_audio_frontend(AudioConfig(kind="wav2vec2", path=str(w2v), wav2vec2_mode="hallo",
                                              hallo_clip_frames=0))
    vae = SimpleNamespace(identity=lambda: {"codec": "pixel"})
    keys = {cache_models_key(vae, fe, 64, 25) for fe in (fada, hallo, hallo0)}
    assert len(keys) == 3
    assert hallo.name != fada.name


def test_config_round_trip_and_errors(w2v):
    cfg = from_dict(AudioConfig, {"kind": "wav2vec2", "path": str(w2v), "wav2vec2_mode": "hallo",
                                  "hallo_clip_frames": 8})
    d = to_dict(cfg)
    assert d["wav2vec2_mode"] == "hallo" and d["hallo_clip_frames"] == 8
    assert from_dict(AudioConfig, d) == cfg
    old = {k: v for k, v in d.items() if k not in ("wav2vec2_mode", "hallo_clip_frames")}  # files from before
    assert from_dict(AudioConfig, old).wav2vec2_mode == "fada"
    with pytest.raises(ConfigError) as e:
        from_dict(AudioConfig, {"kind": "wav2vec2", "path": str(w2v), "wav2vec2_mode": "halo"})
    msg = str(e.value)
    assert "\n" not in msg and len(e.value.problems) == 1
    assert "wav2vec2_mode" in msg and "'halo'" in msg and "hallo" in msg
    with pytest.raises(ConfigError) as e:
        from_dict(AudioConfig, {"kind": "mel", "wav2vec2_mode": "hallo"})
    assert e.value.problems == ["wav2vec2_mode: 'hallo' needs kind 'wav2vec2'"]
    with pytest.raises(ConfigError):
        from_dict(AudioConfig, {"kind": "wav2vec2", "path": str(w2v), "hallo_clip_frames": -1})
    # built directly, without validation: still one line
    with pytest.raises(FadaError) as e:
        build_audio_frontend(AudioConfig(kind="wav2vec2", path=str(w2v), wav2vec2_mode="Hallo"))
    assert "\n" not in str(e.value) and "wav2vec2_mode" in str(e.value)
    with pytest.raises(FadaError):
        build_audio_frontend(AudioConfig(kind="mel", wav2vec2_mode="hallo"))


def test_pipeline_audio_rows_are_hallos_windows(w2v):
    """The pipeline's feature rows for a Hallo-mode front end: one pass over the whole utterance, every clip's
    windows those of Hallo's process_audio_emb over its padded sequence, the padded last clip included."""
    from fada.pipeline import AudioFeatures

    fe = Wav2Vec2FrontEnd(w2v, window=2, mode="hallo", clip_frames=4)
    wav = _speech(int(16000 * 0.5) + 123)  # 12.x frames at 25 fps: Hallo counts 13, pads to 16
    n = 12
    feats = AudioFeatures(fe, wav, n, 25, block_seconds=0.2)
    seq = fe.hallo_sequence(wav, 25, n)
    want = hallo_windows(seq)
    got = torch.cat([feats.rows(s, s + 4) for s in range(0, 16, 4) if s < n])
    assert feats.blocks_computed == 1 and seq.shape[0] == 16
    torch.testing.assert_close(got, want[:got.shape[0]])


def test_long_utterances_run_in_blocks_on_the_one_pass_grid(tmp_path, monkeypatch):
    """Past HALLO_EXACT_SECONDS Hallo's mode runs in blocks with context (flat memory). With the transformer's
    attention switched off and a per-frame norm in the CNN (each frame then sees only the few frames of the
    convolutions), the blocks' rows equal the single pass's: the blocks cut the same frames on the same grid, and
    only what attention (or a norm over time) would read across a block's edge is lost."""
    import fada.models.audio as audio

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(1)  # per-frame layer norm in the CNN (wav2vec2-large's kind; base's group norm spans time)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2,
                         num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                         conv_bias=True, do_stable_layer_norm=True)
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    fe = Wav2Vec2FrontEnd(tmp_path / "w2v", window=2, mode="hallo", clip_frames=4)
    with torch.no_grad():
        for layer in fe.model.encoder.layers:
            layer.attention.out_proj.weight.zero_()
            layer.attention.out_proj.bias.zero_()
    wav = _speech(16000 * 2 + 77)  # 2 s: 51 frames, padded to 52
    one = fe.hallo_sequence(wav, 25)
    calls = []
    real = fe._hallo_pass
    monkeypatch.setattr(fe, "_hallo_pass", lambda w, n, p=None: (calls.append(n), real(w, n, p))[1])
    monkeypatch.setattr(audio, "HALLO_EXACT_SECONDS", 0.8)      # blocks of 20 frames
    monkeypatch.setattr(audio, "HALLO_CONTEXT_SECONDS", 0.4)    # 10 frames of context each side
    blocks = fe.hallo_sequence(wav, 25)
    assert blocks.shape == one.shape and len(calls) == 3 and max(calls) <= 40
    rel = float((blocks - one).abs().max() / one.abs().max())
    # 6.6e-5 measured (float32 interpolation and the convolutions' edges); a block off the single pass's grid, or
    # interpolated end to end on its own, misses by about 1.5
    assert rel < 1e-3, rel
