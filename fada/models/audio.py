"""Per-frame audio features and their projection to audio tokens (docs/architecture.md).

- `load_audio`: wav/flac/ogg/mp3 through librosa, other containers (m4a, aac, mp4…) through PyAV; resampled, mono
  float32.
- `frames_for_duration`: THE number of video frames for an audio (floor: every frame is fully covered by audio).
  Every stage uses it so that a generated video has exactly the audio's length at the chosen fps.
  (`hallo_frame_count` is Hallo's own count, rounded up; only its wav2vec2 mode uses it, internally.)
- Front ends (`AudioFrontEnd`): ``features(waveform (S,), num_frames, fps) -> Tensor (F, 2w+1, L, D)``; row f
  holds the features of frames f-w..f+w (indices clamped: edge replication). Video frame f covers the audio
  interval [f/fps, (f+1)/fps).
    * `MelFrontEnd`: weight-free log-mel (librosa), L = 1, D = n_mels, fixed dB normalisation (silence -> -1).
    * `Wav2Vec2FrontEnd`: transformers `Wav2Vec2Model` from a local folder. mode 'fada': all hidden states
      (L = layers + 1, D = hidden_size), linearly resampled from the wav2vec2 rate (50 Hz) to the video frame rate.
      mode 'hallo': Hallo's features (L = layers: its ``hidden_states[1:]``), the CNN features resampled to the
      frame count before the transformer, one pass over the whole utterance.
- `AudioProjection`: (…, 2w+1, L, D) -> (…, n_tokens, out_dim): softmax-weighted sum of the layers, MLP over
  the flattened window, LayerNorm; ``kind='hallo'`` is Hallo's AudioProjModel (every layer of the window
  flattened, ReLU MLP). Saves/loads with diffusers' save_pretrained.
"""

from __future__ import annotations

import abc
import json
import math
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from fada.config.model import AudioConfig
from fada.errors import FadaError, MissingFileError

__all__ = [
    "load_audio",
    "frames_for_duration",
    "hallo_frame_count",
    "window_features",
    "AudioFrontEnd",
    "MelFrontEnd",
    "Wav2Vec2FrontEnd",
    "build_audio_frontend",
    "AudioProjection",
    "build_audio_projection",
]


# ----------------------------------------------------------------------------------------------------------------
# audio files and lengths


def _libsndfile_reads(path: Path) -> bool:
    import soundfile as sf

    try:
        sf.info(str(path))
    except Exception:
        return False
    return True


def load_audio(path, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file, mix to mono, resample to ``sample_rate``: float32 array (S,).

    Missing file -> MissingFileError; unreadable or empty -> FadaError naming the file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(p, "audio file")
    import librosa

    try:
        if _libsndfile_reads(p):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa's audioread fallback warnings
                y, _ = librosa.load(str(p), sr=sample_rate, mono=True)
        else:  # m4a/aac/mp4...: librosa would need an ffmpeg program (audioread); PyAV brings its own FFmpeg
            from fada.data.media import read_audio_track

            y = read_audio_track(p, sample_rate)
    except Exception as e:
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise FadaError(f"cannot read audio file {p}: {msg}") from e
    if y.size == 0:
        raise FadaError(f"audio file {p} is empty (no samples)")
    y = np.ascontiguousarray(y, dtype=np.float32)
    if not np.all(np.isfinite(y)):
        raise FadaError(f"audio file {p} contains non-finite samples")
    return y


def frames_for_duration(num_samples: int, sample_rate: int, fps: int) -> int:
    """Number of video frames an audio of ``num_samples`` samples gives at ``fps``: floor(S·fps / sr).

    Floor, so that every frame [f/fps, (f+1)/fps) lies inside the audio; exact integer arithmetic.
    """
    return int(num_samples) * int(fps) // int(sample_rate)


HALLO_EXACT_SECONDS = 60.0
"""Hallo's wav2vec2 mode runs one pass over utterances up to this long (its own features, exactly); longer ones in
blocks of this length, so that memory stays flat."""
HALLO_CONTEXT_SECONDS = 5.0
"""Audio on each side of a block that its attention sees (long utterances in Hallo's mode)."""


def hallo_frame_count(num_samples: int, sample_rate: int, fps: int) -> int:
    """Hallo's frame count for an audio of ``num_samples`` samples: ``ceil(S / sr * fps)`` in floating point, as its
    AudioProcessor computes it.

    It rounds up (a last partial frame counts) where `frames_for_duration` rounds down, and, being float arithmetic,
    it counts one frame more than exact for some audio of whole frames (16 kHz, 25 fps: 4480 samples, 7 frames,
    give 8; 925 such lengths under 10 minutes). Kept as is: the count sets Hallo's interpolation grid.
    """
    return math.ceil(int(num_samples) / int(sample_rate) * int(fps))


def window_features(feats: torch.Tensor, window: int, rows: int | None = None) -> torch.Tensor:
    """(F, L, D) per-frame features -> (R, 2w+1, L, D): row f holds frames f-w..f+w, indices clamped to [0, F-1].

    ``rows``: R, the first rows only (default all F); their windows still read, and clamp at, all F frames.
    """
    n = feats.shape[0]
    rows = n if rows is None else int(rows)
    if not 0 <= rows <= n:
        raise ValueError(f"rows={rows} outside the {n} frames given")
    if rows == 0:
        return feats.new_zeros((0, 2 * window + 1, *feats.shape[1:]))
    offsets = torch.arange(-window, window + 1, device=feats.device)
    idx = (torch.arange(rows, device=feats.device)[:, None] + offsets[None, :]).clamp_(0, n - 1)
    return feats[idx]


# ----------------------------------------------------------------------------------------------------------------
# front ends


class AudioFrontEnd(abc.ABC):
    """Interface: ``features(waveform, num_frames, fps) -> (F, 2w+1, L, D)`` float32 tensor on the CPU."""

    name: str = "audio"
    sample_rate: int
    window: int
    num_layers: int
    feature_dim: int

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(2w+1, L, D) of one frame's features."""
        return (2 * self.window + 1, self.num_layers, self.feature_dim)

    @abc.abstractmethod
    def frame_features(self, waveform: np.ndarray, num_frames: int, fps: int) -> torch.Tensor:
        """(F, L, D) features of each frame, before windowing."""

    def window_source(self, waveform: np.ndarray, num_frames: int, fps: int) -> torch.Tensor:
        """(F', L, D), F' >= F: the frames the windows read; the first F rows are ``frame_features`` and the window
        indices clamp at F'-1. Default: ``frame_features`` (F' = F, clamped at the last asked frame)."""
        return self.frame_features(waveform, num_frames, fps)

    def features(self, waveform: np.ndarray, num_frames: int, fps: int) -> torch.Tensor:
        wav = np.asarray(waveform, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"waveform must be mono (S,), got shape {wav.shape}")
        if num_frames < 0 or fps <= 0:
            raise ValueError(f"need num_frames >= 0 and fps > 0, got {num_frames}, {fps}")
        if num_frames == 0:
            return torch.zeros((0, *self.feature_shape))
        feats = self.window_source(wav, int(num_frames), int(fps))
        assert feats.shape[0] >= num_frames and feats.shape[1:] == (self.num_layers, self.feature_dim), feats.shape
        return window_features(feats.float().cpu(), self.window, rows=int(num_frames))

    def to(self, device) -> "AudioFrontEnd":
        return self

    def identity(self) -> dict:
        """What decides the per-frame features (the data cache is keyed by it; the window is applied on reading)."""
        return {"audio": self.name, "sample_rate": self.sample_rate}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class MelFrontEnd(AudioFrontEnd):
    """Weight-free log-mel front end: L = 1, D = n_mels.

    STFT (Hann window of the largest power of two <= one frame's samples, at most 512, zero-padded to n_fft=512;
    hop = window/4; zero padding). Frame f averages the mel power of the STFT columns centred in
    [f/fps, (f+1)/fps) (centres offset by hop/2 so none sits on a boundary), so energy leaks at most half an STFT
    window into a neighbouring frame. Power is scaled so
    a full-scale sine is about 0 dB; the feature is ``(clip(dB, -100) + 50) / 50``, a fixed map: silence is
    exactly -1, loud speech around 0..1.
    """

    N_FFT = 512
    FLOOR_DB = -100.0
    # samples a frame's feature reads past the frame's end: its last STFT column is centred inside the frame and a
    # centred window reaches N_FFT/2 past its centre (a streaming session's lookahead covers this)
    receptive_field = N_FFT // 2

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, window: int = 2):
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.window = int(window)
        self.num_layers = 1
        self.feature_dim = self.n_mels
        self.name = f"log-mel({self.n_mels})"
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "empty filters" for many mels at low rates
            self._mel = librosa.filters.mel(sr=self.sample_rate, n_fft=self.N_FFT, n_mels=self.n_mels,
                                            norm=None).astype(np.float64)

    def frame_features(self, waveform: np.ndarray, num_frames: int, fps: int) -> torch.Tensor:
        import librosa

        sr = self.sample_rate
        spf = sr / fps
        win = min(self.N_FFT, 2 ** int(math.floor(math.log2(max(spf, 4)))))
        hop = max(1, win // 4)
        need = -(-num_frames * sr // fps)  # ceil: samples covering all frames
        # Column j is centred at j*hop - shift (shift = hop/2 rounded up): the columns of a frame sit symmetrically
        # inside it, none on a frame boundary. Span: the frames plus lookahead; silence past the audio's end.
        shift = hop - hop // 2
        y = np.zeros(shift + need + win, np.float64)
        n = min(need + win, waveform.shape[0])
        y[shift:shift + n] = waveform[:n]
        spec = librosa.stft(y, n_fft=self.N_FFT, hop_length=hop, win_length=win, window="hann",
                            center=True, pad_mode="constant")
        wsum = np.hanning(win + 1)[:-1].sum() if win > 1 else 1.0
        power = (np.abs(spec) ** 2) * (4.0 / wsum ** 2)  # full-scale sine peak bin ~ 1
        mel = self._mel @ power  # (n_mels, T)
        centers = np.arange(mel.shape[1]) * hop - shift
        fidx = np.floor_divide(centers * fps, sr)  # frame whose interval holds the column centre (exact integers)
        keep = (centers >= 0) & (fidx < num_frames)
        fidx, mel = fidx[keep], mel[:, keep]
        acc = np.zeros((num_frames, self.n_mels))
        np.add.at(acc, fidx, mel.T)
        counts = np.bincount(fidx, minlength=num_frames)[:num_frames].astype(np.float64)
        acc /= np.maximum(counts, 1.0)[:, None]
        db = 10.0 * np.log10(np.maximum(acc, 10.0 ** (self.FLOOR_DB / 10.0)))
        feat = (db + 50.0) / 50.0
        return torch.from_numpy(feat.astype(np.float32))[:, None, :]


WAV2VEC2_MODES = ("fada", "hallo")


class Wav2Vec2FrontEnd(AudioFrontEnd):
    """transformers `Wav2Vec2Model` from a local folder (config.json + weights), frozen; two ways to use it.

    ``mode='fada'`` (default): all hidden states, L = layers + 1. The waveform is normalised per utterance (zero
    mean, unit variance, as `Wav2Vec2FeatureExtractor` does when ``do_normalize`` is true in
    preprocessor_config.json, the default), cut to the span of the requested frames (plus one receptive field), run
    in chunks of ``chunk_seconds`` with ``context_seconds`` of context on each side, and the hidden states (output j
    centred at (j·R + K/2)/sr, R = conv stride product, K = receptive field) are linearly interpolated at the video
    frame centres (f + 0.5)/fps, clamped at the ends: exactly ``num_frames``.

    ``mode='hallo'``: the features Hallo's teacher reads (its AudioProcessor.preprocess with ``features: all``, its
    Wav2VecModel, its ``process_audio_emb``), L = layers (12 x 768 for wav2vec2-base). The waveform given is the
    whole utterance (as `load_audio` gives it: mono, 16 kHz; Hallo runs an optional vocal separator first, fada feeds
    the audio as given):

    1. normalised in float32 as the feature extractor does (``do_normalize``);
    2. N = `hallo_frame_count` (ceil, float arithmetic) frames, then zero samples appended after the normalisation,
       ``sr // fps`` per added frame (integer division, Hallo's), until N is a multiple of ``clip_frames`` (Hallo's
       clip length; 0: no padding);
    3. the CNN feature encoder's output is linearly interpolated to N steps, ``align_corners=True``, BEFORE the
       feature projection and the transformer (which therefore run at the video rate), in one pass over the whole
       padded utterance: every row depends on all of it (normalisation, grid, attention);
    4. the outputs of the transformer layers, ``hidden_states[1:]``, stacked: (N, L, D);
    5. ``features`` windows them ±w with indices clamped to [0, N-1], N the padded count.

    Frame counts: fada asks for n = `frames_for_duration` (floor) <= N frames. The rows returned are rows 0..n-1 of
    Hallo's sequence, exactly. A last partial frame (the audio past n/fps) is computed as Hallo computes it but not
    returned: fada's video stops at the last whole frame, Hallo's shows the partial one (it trims to the ceil
    count). The windows of the last rows read that partial frame and the padded ones, as Hallo's do, not repeats
    of frame n-1 (``window_source``). Asked for more than N frames, the front end appends more zero samples by the
    same rule (and pads to the clip multiple again): rows of a longer utterance, no longer Hallo's.

    ``whole_utterance`` is True: callers must give the whole audio in one call. Up to ``HALLO_EXACT_SECONDS`` of
    audio the transformer runs once over all N frames, as in Hallo, and the rows are Hallo's. Longer audio, whose
    attention over every frame would grow memory with the square of its length, runs in blocks of that length with
    ``HALLO_CONTEXT_SECONDS`` of audio on each side (normalised over the whole utterance first, padded as Hallo
    pads, each block's CNN features interpolated to its own frames): memory stays flat, and rows differ from a
    single pass only through the context the attention sees.
    """

    def __init__(self, path, window: int = 2, device="cpu", sample_rate: int = 16000,
                 chunk_seconds: float = 30.0, context_seconds: float = 2.0, mode: str = "fada",
                 clip_frames: int = 16):
        if mode not in WAV2VEC2_MODES:
            raise FadaError(f"audio.wav2vec2_mode: {mode!r} is not one of {', '.join(WAV2VEC2_MODES)}")
        if int(clip_frames) < 0:
            raise FadaError(f"audio.hallo_clip_frames: must be >= 0, got {clip_frames}")
        root = Path(path).expanduser()
        cfg_file = root / "config.json"
        if not cfg_file.is_file():
            raise MissingFileError(cfg_file, "wav2vec2 config",
                                   "audio.path must be a local wav2vec2 folder in transformers layout")
        from transformers import Wav2Vec2Model

        from fada.models.loading import quiet_hf_loading

        try:
            with quiet_hf_loading():  # a CTC checkpoint's lm_head is not used: no table about it on every load
                model, info = Wav2Vec2Model.from_pretrained(str(root), output_loading_info=True)
        except (OSError, EnvironmentError) as e:
            raise MissingFileError(root / "model.safetensors", "wav2vec2 weights",
                                   " ".join(str(e).split())[:300]) from e
        except Exception as e:
            raise FadaError(f"cannot load wav2vec2 from {root}: {' '.join(str(e).split())[:300]}") from e
        missing = [k for k in info.get("missing_keys", []) if "masked_spec_embed" not in k]  # training-only
        if missing:
            raise FadaError(f"{root}: the wav2vec2 weights lack {len(missing)} tensors the model needs, e.g. "
                            f"{sorted(missing)[0]}")
        model.requires_grad_(False)
        model.eval()
        self.model = model.to(device)
        self.device = torch.device(device)
        self.path = str(root)
        self.sample_rate = int(sample_rate)
        self.window = int(window)
        cfg = model.config
        self.mode = mode
        self.clip_frames = int(clip_frames)
        self.whole_utterance = mode == "hallo"
        self.num_layers = int(cfg.num_hidden_layers) + (1 if mode == "fada" else 0)
        self.feature_dim = int(cfg.hidden_size)
        self.do_normalize = True
        pre = root / "preprocessor_config.json"
        if pre.is_file():
            try:
                self.do_normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
            except (ValueError, OSError) as e:
                raise FadaError(f"cannot read {pre}: {e}") from e
        self.stride = int(np.prod(cfg.conv_stride))
        rf, jump = 1, 1
        for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
            rf += (k - 1) * jump
            jump *= s
        self.receptive_field = rf
        self.chunk_frames = max(1, int(chunk_seconds * self.sample_rate) // self.stride)
        self.context_frames = max(0, int(context_seconds * self.sample_rate) // self.stride)
        self.name = f"wav2vec2({self.num_layers}x{self.feature_dim})" if mode == "fada" else \
            f"wav2vec2-hallo({self.num_layers}x{self.feature_dim})"

    def identity(self) -> dict:
        from fada.models.loading import config_identity, weights_fingerprint

        out = {"audio": "wav2vec2", "config": config_identity(self.model.config.to_dict()),
               "do_normalize": self.do_normalize, "sample_rate": self.sample_rate,
               "weights": weights_fingerprint(self.path)}
        if self.mode != "fada":  # 'fada' keeps its earlier identity: caches made before the modes stay valid
            out.update(mode=self.mode, clip_frames=self.clip_frames)
        return out

    def to(self, device) -> "Wav2Vec2FrontEnd":
        self.model.to(device)
        self.device = torch.device(device)
        return self

    @torch.no_grad()
    def hidden_states(self, wav: np.ndarray) -> torch.Tensor:
        """All hidden states of a (normalised) waveform: (T, L, D), T = floor((S-K)/R) + 1 (S >= K)."""
        R, K = self.stride, self.receptive_field
        if wav.shape[0] < K:
            wav = np.pad(wav, (0, K - wav.shape[0]))
        total = (wav.shape[0] - K) // R + 1
        out = []
        for a in range(0, total, self.chunk_frames):
            b = min(total, a + self.chunk_frames)
            a0, b0 = max(0, a - self.context_frames), min(total, b + self.context_frames)
            seg = torch.from_numpy(np.ascontiguousarray(wav[a0 * R:(b0 - 1) * R + K]))
            res = self.model(seg[None].to(self.device), output_hidden_states=True)
            hs = torch.stack(res.hidden_states, dim=2)[0]  # (T_chunk, L, D)
            out.append(hs[a - a0:b - a0].float().cpu())
        return torch.cat(out)

    def frame_features(self, waveform: np.ndarray, num_frames: int, fps: int) -> torch.Tensor:
        if self.mode == "hallo":
            return self.hallo_sequence(waveform, fps, num_frames)[:num_frames]
        sr, R, K = self.sample_rate, self.stride, self.receptive_field
        need = -(-num_frames * sr // fps)
        wav = waveform[:need + K].astype(np.float64)
        if self.do_normalize and wav.size:
            wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
        if wav.shape[0] < need:
            wav = np.pad(wav, (0, need - wav.shape[0]))
        hs = self.hidden_states(wav.astype(np.float32))  # (T, L, D)
        t = hs.shape[0]
        pos = ((np.arange(num_frames) + 0.5) * sr / fps - K / 2.0) / R
        pos = np.clip(pos, 0.0, t - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, t - 1)
        frac = torch.from_numpy((pos - lo).astype(np.float32))[:, None, None]
        return hs[lo] * (1.0 - frac) + hs[hi] * frac

    def window_source(self, waveform: np.ndarray, num_frames: int, fps: int) -> torch.Tensor:
        if self.mode == "hallo":  # windows clamp at Hallo's last (padded) frame, as its process_audio_emb
            return self.hallo_sequence(waveform, fps, num_frames)
        return self.frame_features(waveform, num_frames, fps)

    def hallo_frames(self, num_samples: int, fps: int, min_frames: int = 0) -> int:
        """N: the frames Hallo's mode computes for an utterance of ``num_samples`` samples (at least ``min_frames``),
        padded to a multiple of ``clip_frames``."""
        n = max(hallo_frame_count(num_samples, self.sample_rate, fps), int(min_frames))
        if self.clip_frames > 0 and n % self.clip_frames:
            n += self.clip_frames - n % self.clip_frames
        return n

    @torch.no_grad()
    def hallo_sequence(self, waveform: np.ndarray, fps: int, min_frames: int = 0) -> torch.Tensor:
        """Hallo's per-frame features of a whole utterance, padding frames included: (N, L, D) float32 on the CPU,
        N = ``hallo_frames(len(waveform), fps, min_frames)`` (see the class docstring)."""
        wav = np.asarray(waveform, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"waveform must be mono (S,), got shape {wav.shape}")
        if self.do_normalize and wav.size:  # Wav2Vec2FeatureExtractor's normalisation, in its float32
            wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
        total = self.hallo_frames(wav.shape[0], fps, min_frames)
        if total == 0:
            return torch.zeros((0, self.num_layers, self.feature_dim))
        extra = total - hallo_frame_count(wav.shape[0], self.sample_rate, fps)
        pad = extra * (self.sample_rate // int(fps))  # Hallo's padding: sr // fps zero samples per added frame
        pad = max(pad, self.receptive_field - wav.shape[0])  # shorter than one CNN step: Hallo would fail
        if pad > 0:
            wav = np.concatenate([wav, np.zeros(pad, np.float32)])
        block = int(HALLO_EXACT_SECONDS * fps)
        if total <= block:
            return self._hallo_pass(wav, total)
        # long audio: blocks of frames [lo, hi), each run with context frames on both sides over the stretch of CNN
        # frames those frames interpolate from in the single pass (align_corners: frame f reads CNN position
        # f·(T−1)/(N−1)), so every block reads the single pass's grid
        R, K = self.stride, self.receptive_field
        T = int((wav.shape[0] - K) // R + 1)  # CNN frames of the whole (padded) utterance
        pos = np.arange(total, dtype=np.float64) * ((T - 1) / max(total - 1, 1))
        ctx = int(HALLO_CONTEXT_SECONDS * fps)
        out = []
        for lo in range(0, total, block):
            hi = min(total, lo + block)
            a0, a1 = max(0, lo - ctx), min(total, hi + ctx)
            j0, j1 = int(np.floor(pos[a0])), min(T, int(np.floor(pos[a1 - 1])) + 2)
            seg = wav[j0 * R:(j1 - 1) * R + K]  # CNN frames j0 .. j1-1 of the whole
            out.append(self._hallo_pass(seg, a1 - a0, torch.from_numpy(pos[a0:a1] - j0))[lo - a0:hi - a0])
        return torch.cat(out)

    @torch.no_grad()
    def _hallo_pass(self, wav: np.ndarray, frames: int, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One wav2vec2 pass over ``wav`` with its CNN features resampled to ``frames`` before the transformer:
        (frames, L, D), ``hidden_states[1:]``. The frames read the CNN features linearly at ``positions`` (in CNN
        frames of ``wav``; default: spread end to end, ``interpolate(align_corners=True)``, as Hallo does)."""

        def to_frames(_module, _args, out):  # (1, C, T) CNN features -> (1, C, N), before the projection
            if positions is None:
                return torch.nn.functional.interpolate(out, size=frames, mode="linear", align_corners=True)
            p = positions.to(out.device, torch.float64).clamp(0, out.shape[-1] - 1)
            i0 = p.floor().long().clamp(max=out.shape[-1] - 2) if out.shape[-1] > 1 else p.floor().long()
            i1 = (i0 + 1).clamp(max=out.shape[-1] - 1)
            w = (p - i0).to(out.dtype)
            return out[..., i0] * (1 - w) + out[..., i1] * w

        hook = self.model.feature_extractor.register_forward_hook(to_frames)
        try:
            res = self.model(torch.from_numpy(np.ascontiguousarray(wav))[None].to(self.device),
                             output_hidden_states=True)
        finally:
            hook.remove()
        return torch.stack(res.hidden_states[1:], dim=2)[0].float().cpu()  # (1, N, L, D) -> (N, L, D)


def build_audio_frontend(cfg: AudioConfig, device="cpu") -> AudioFrontEnd:
    """The front end a recipe asks for: ``kind='mel'`` -> `MelFrontEnd`, ``kind='wav2vec2'`` -> `Wav2Vec2FrontEnd`
    (in ``cfg.wav2vec2_mode``)."""
    mode = getattr(cfg, "wav2vec2_mode", "fada")
    if mode not in WAV2VEC2_MODES:
        raise FadaError(f"audio.wav2vec2_mode: {mode!r} is not one of {', '.join(WAV2VEC2_MODES)}")
    if mode != "fada" and cfg.kind != "wav2vec2":
        raise FadaError(f"audio.wav2vec2_mode: {mode!r} needs audio.kind 'wav2vec2', got {cfg.kind!r}")
    if cfg.kind == "mel":
        return MelFrontEnd(cfg.sample_rate, cfg.n_mels, cfg.window)
    if cfg.kind == "wav2vec2":
        if not cfg.path:
            raise FadaError("audio.path: required for audio.kind 'wav2vec2' (a local wav2vec2 folder)")
        if cfg.sample_rate != 16000:
            raise FadaError(f"audio.sample_rate: wav2vec2 needs 16000, got {cfg.sample_rate}")
        return Wav2Vec2FrontEnd(cfg.path, window=cfg.window, device=device, sample_rate=cfg.sample_rate, mode=mode,
                                clip_frames=getattr(cfg, "hallo_clip_frames", 16))
    raise FadaError(f"audio.kind: unknown front end {cfg.kind!r} (choose 'mel' or 'wav2vec2')")


# ----------------------------------------------------------------------------------------------------------------
# projection


class AudioProjection(ModelMixin, ConfigMixin):
    """(…, 2w+1, L, D) window features -> (…, n_tokens, out_dim) audio tokens.

    ``kind='fada'``: softmax-weighted sum over the L layers (weights learned, start uniform), then an MLP over the
    flattened window ((2w+1)·D -> hidden -> hidden -> n_tokens·out_dim, SiLU), then LayerNorm(out_dim).
    ``kind='hallo'``: no layer weights; the MLP reads the whole window of every layer ((2w+1)·L·D inputs, ReLU),
    as Hallo's AudioProjModel (its proj1/proj2/proj3 are ``mlp.0/2/4``).
    """

    @register_to_config
    def __init__(self, feature_layers: int, feature_dim: int, window: int = 2, n_tokens: int = 32,
                 hidden_dim: int = 512, out_dim: int = 768, kind: str = "fada"):
        super().__init__()
        if kind not in ("fada", "hallo"):
            raise ValueError(f"audio projection kind {kind!r} is not 'fada' or 'hallo'")
        in_dim = (2 * window + 1) * feature_dim
        if kind == "fada":
            self.layer_logits = nn.Parameter(torch.zeros(feature_layers))
        else:
            in_dim *= feature_layers
        act = nn.SiLU if kind == "fada" else nn.ReLU
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), act(),
            nn.Linear(hidden_dim, hidden_dim), act(),
            nn.Linear(hidden_dim, n_tokens * out_dim),
        )
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        c = self.config
        expect = (2 * c.window + 1, c.feature_layers, c.feature_dim)
        if tuple(features.shape[-3:]) != expect:
            raise ValueError(f"audio features must end in {expect}, got {tuple(features.shape)}")
        lead = features.shape[:-3]
        if c.kind == "hallo":
            x = features
        else:
            w = torch.softmax(self.layer_logits, dim=0).to(features.dtype)
            x = torch.einsum("...wld,l->...wd", features, w)  # (…, 2w+1, D)
        x = self.mlp(x.reshape(*lead, -1))
        return self.norm(x.reshape(*lead, c.n_tokens, c.out_dim))


def build_audio_projection(cfg: AudioConfig, feature_shape: tuple[int, int, int], out_dim: int) -> AudioProjection:
    """Projection sized for a front end's ``feature_shape`` (2w+1, L, D) and the UNet's cross-attention width."""
    win, layers, dim = feature_shape
    if win != 2 * cfg.window + 1:
        raise ValueError(f"feature window {win} does not match audio.window={cfg.window}")
    return AudioProjection(feature_layers=layers, feature_dim=dim, window=cfg.window, n_tokens=cfg.n_tokens,
                           hidden_dim=cfg.hidden_dim, out_dim=out_dim)
