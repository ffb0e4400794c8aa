"""Streaming sessions: one portrait, audio pushed as it arrives, frames pulled as soon as a clip's audio is in --
the core of a live avatar, shaped like LiveKit Agents' avatar ``VideoGenerator`` (push audio, end a segment,
clear on interruption, iterate frames and segment-end markers).

    session = pipe.session("portrait.png")            # or AvatarSession(pipe, "portrait.png", mode="fast")
    session.push_audio(pcm_int16, 48000, channels=2)   # any chunk size, rate and channel count
    session.end_segment()                              # the utterance is over: flush its last partial clip
    for item in session:                               # SessionFrame ... SegmentEnd; stops when nothing is ready
        ...

The clip loop is ``fada.engine.ClipEngine``, the one ``fada generate`` runs: everything a video prepares once (the
reference latent and its bank, portrait conditions, the clip-noise generator) is prepared once per session. A clip of F frames is generated once its audio plus ``lookahead_ms`` is
queued; its features come from the front end's ``frame_features`` on [clip start - context, clip end + lookahead]
with the same context as ``fada.clips.AudioFeatures``, so with the log-mel front end a file pushed in any chunks and
ended gives exactly the frames of ``pipe.generate_frames`` with the same seed. The motion latents and the clip
counter (which seeds the noise) carry over between clips, segments and idle clips, so the face does not jump when
speech resumes. Memory stays flat: only a few seconds of audio before the next clip are kept, frames are yielded.
Pacing is the caller's: frames carry timestamps at the model's fps; ``idle=True`` fills gaps with the model on
silence. Denoising and decoding run on the thread that iterates (``async for`` runs them in a worker thread).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import numpy as np
import torch

from fada.errors import FadaError
from fada.models.audio import MelFrontEnd, frames_for_duration


@dataclass(frozen=True)
class SessionFrame:
    image: np.ndarray      # uint8 (H, W, 3)
    timestamp: float       # seconds on the session's output timeline: index / fps
    audio: np.ndarray      # float32 samples at the front end's rate that this frame shows (zeros when idle)
    index: int             # frames emitted before this one, speech and idle alike
    idle: bool = False     # generated from silence while no speech was queued (a player sends no audio for it)


@dataclass(frozen=True)
class SegmentEnd:
    timestamp: float       # the end of the segment's last frame on the output timeline


_END = object()  # queued marker, stamped when emitted


class _Segment:
    """One utterance's audio at the front end's rate: a bounded tail of it (``chunks``, starting at segment sample
    ``offset``), the samples pushed (``total``) and the model frames generated (``done``)."""

    def __init__(self):
        self.chunks: list = []
        self.offset = self.total = self.done = 0
        self.ended = False

    def append(self, x: np.ndarray) -> None:
        if x.size:
            self.chunks.append(x)
            self.total += x.size

    def audio(self, start: int) -> np.ndarray:
        """Samples [start, total) of the segment (start >= offset); the pushed chunks joined once, here."""
        if len(self.chunks) != 1:
            self.chunks = [np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)]
        assert start >= self.offset, (start, self.offset)
        return self.chunks[0][start - self.offset:]

    def trim(self, keep_from: int) -> None:
        if keep_from > self.offset:
            self.chunks = [self.audio(keep_from).copy()]  # a copy: the old array's head is freed
            self.offset = keep_from

    @property
    def retained(self) -> int:
        return sum(c.size for c in self.chunks)


class AvatarSession:
    """A live session on one portrait (see the module docstring). ``lookahead_ms``: audio past a clip's end that
    must be queued before the clip is generated (default: the feature window plus the front end's own reach, which
    makes a streamed file's frames equal the offline ones; less gives lower latency and approximate features at
    each clip's end). ``idle``: iteration generates clips of silence when no speech is queued."""

    def __init__(self, pipe, portrait, mode: Optional[str] = None, cfg_audio: Optional[float] = None,
                 cfg_ref: Optional[float] = None, seed: int = 0, crop: bool = True,
                 lookahead_ms: Optional[float] = None, steps: Optional[int] = None, idle: bool = False):
        fe = pipe.frontend
        if getattr(fe, "whole_utterance", False):
            raise FadaError("session: this model's audio front end needs the whole utterance at once (wav2vec2 "
                            "in Hallo's mode) and cannot stream")
        self.pipe, self.seed, self.idle = pipe, int(seed), bool(idle)
        self.plan = pipe.plan(mode, steps, cfg_audio, cfg_ref)
        cfg = pipe.model_cfg
        self.fps, self.sample_rate = int(cfg.fps), int(fe.sample_rate)
        self.num_frames, self.window = int(cfg.num_frames), int(fe.window)
        # feature slices start at frames that are whole samples (multiples of q). Left context: a log-mel frame
        # reads less than one frame of audio before it, so w+1 frames make the rows exact and each clip's features
        # cost about a clip of audio; other front ends (wav2vec2's attention sees everything) get AudioFeatures' 2 s
        self._q = self.fps // math.gcd(self.sample_rate, self.fps)
        ctx = self.window + 1 if isinstance(fe, MelFrontEnd) else max(self.window + 1, 2 * self.fps)
        self._ctx = -(-ctx // self._q) * self._q
        reach = int(getattr(fe, "receptive_field", 0))  # samples a frame's feature reads past its end
        if lookahead_ms is None:
            self.lookahead_samples = -(-self.window * self.sample_rate // self.fps) + reach
        else:
            if not (isinstance(lookahead_ms, (int, float)) and math.isfinite(lookahead_ms) and lookahead_ms >= 0):
                raise FadaError(f"session: lookahead_ms {lookahead_ms!r}: must be a finite number >= 0")
            self.lookahead_samples = int(round(lookahead_ms * self.sample_rate / 1000.0))

        self.image = pipe.load_portrait(portrait, crop)
        from fada.engine import ClipEngine

        self._engine = ClipEngine(pipe, self.image, self.plan, self.seed)
        self._silence: Optional[torch.Tensor] = None

        self._lock = threading.Lock()       # input and output state (push/clear may come from other threads)
        self._gen = threading.RLock()       # one clip generated at a time
        self._wake = threading.Event()      # set by push/end/clear/close: an async iterator waiting re-checks
        self._segments: deque = deque([_Segment()])  # the last one takes pushed audio; the first is generated
        self._out: deque = deque()
        self._emitted = 0
        self._epoch = 0                     # bumped by clear(): a clip finishing after it is dropped
        self._closed = False
        self._resampler = None
        self._in_rate: Optional[int] = None
        self._resampling = False  # input sits in the resampler that has not come out yet: speech is pending

    # -- input ---------------------------------------------------------------------------------------------------
    def push_audio(self, pcm, sample_rate: int, channels: int = 1) -> None:
        """Queue PCM: float32/float64 in [-1, 1] or int16 (an array, or raw int16 bytes), interleaved (1-D) or
        (samples, channels); mixed to mono and resampled to the front end's rate by one soxr stream per segment
        (librosa's own resampler, kept running so chunk edges leave no seams). Bad input raises a one-line
        FadaError and leaves the session as it was."""
        x = _mono(pcm, sample_rate, channels)
        rate = int(sample_rate)
        with self._lock:
            if self._closed:
                raise FadaError("session: closed; no more audio can be pushed")
            if x.size == 0:
                return
            if rate != self._in_rate:
                self._flush_resampler()
                self._in_rate = rate
                if rate != self.sample_rate:
                    import soxr

                    self._resampler = soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32",
                                                          quality="HQ")
            if self._resampler is not None:
                x = self._resampler.resample_chunk(x)
                self._resampling = True
            self._segments[-1].append(np.ascontiguousarray(x, dtype=np.float32))
        self._wake.set()

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            self._segments[-1].append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self._resampler, self._in_rate, self._resampling = None, None, False

    def end_segment(self) -> None:
        """The utterance is over: its last partial clip is generated (padded with its last feature frame, output
        trimmed), then a ``SegmentEnd`` follows its frames. A segment without audio is ignored."""
        with self._lock:
            if self._closed:
                raise FadaError("session: closed")
            self._flush_resampler()
            if self._segments[-1].total:
                self._segments[-1].ended = True
                self._segments.append(_Segment())
        self._wake.set()

    def clear(self) -> None:
        """Interruption: drop queued audio and frames not yet emitted (a clip being generated is dropped when it
        finishes). The motion latents stay, so the next frames continue the face."""
        with self._lock:
            self._epoch += 1
            self._segments = deque([_Segment()])
            self._out.clear()
            self._resampler, self._in_rate, self._resampling = None, None, False
        self._wake.set()

    def close(self) -> None:
        """No more input: iteration yields what ended segments still owe, then stops (an unended segment's audio
        is dropped)."""
        with self._lock:
            self._closed = True
        self._wake.set()

    @property
    def buffered_samples(self) -> int:
        """Audio samples held (front end's rate), all segments together: flat however long the session runs."""
        with self._lock:
            return sum(s.retained for s in self._segments)

    @property
    def speech_pending(self) -> bool:
        with self._lock:
            return self._speech_pending()

    def _speech_pending(self) -> bool:
        return len(self._segments) > 1 or self._segments[0].total > 0 or self._resampling

    # -- output --------------------------------------------------------------------------------------------------
    def __iter__(self) -> "AvatarSession":
        return self

    def __next__(self) -> Union[SessionFrame, SegmentEnd]:
        """The next frame or marker; generates a clip when one is due. StopIteration when nothing is ready (call
        again after pushing more), so a loop on one thread never blocks."""
        item = self._next_item(self.idle)
        if item is None:
            raise StopIteration
        return item

    def __aiter__(self) -> "AvatarSession":
        return self

    async def __anext__(self) -> Union[SessionFrame, SegmentEnd]:
        """As ``__next__``, with the blocking work in a thread; waits for audio while the session is open."""
        while True:
            self._wake.clear()  # before checking: a push during the check wakes the wait below
            item = await asyncio.to_thread(self._next_item, self.idle)
            if item is not None:
                return item
            if self._closed:
                raise StopAsyncIteration
            await asyncio.to_thread(self._wake.wait, 0.5)

    def idle_frames(self, max_frames: Optional[int] = None) -> Iterator[Union[SessionFrame, SegmentEnd]]:
        """Anything queued, then frames of silence clip after clip while no speech is queued (at most
        ``max_frames`` in all); stops as soon as speech is queued, so the caller switches back to iterating."""
        n = 0
        while max_frames is None or n < max_frames:
            with self._lock:
                if self._speech_pending() and not self._out:
                    return
            item = self._next_item(idle=True)
            if item is None:
                return
            n += isinstance(item, SessionFrame)
            yield item

    def next_idle_clip(self) -> list:
        """Whatever is still queued, then the frames of one clip of silence."""
        with self._gen:
            self._generate_idle()
            with self._lock:
                return [self._emit() for _ in range(len(self._out))]

    def _emit(self) -> Union[SessionFrame, SegmentEnd]:
        item = self._out.popleft()
        if item is _END:
            return SegmentEnd(self._emitted / self.fps)
        image, audio, idle = item
        frame = SessionFrame(image, self._emitted / self.fps, audio, self._emitted, idle)
        self._emitted += 1
        return frame

    def _next_item(self, idle: bool = False):
        with self._gen:
            while True:
                with self._lock:
                    if self._out:
                        return self._emit()
                    job = self._take_job()
                    if job is None:
                        if not self._out and (not idle or self._closed or self._speech_pending()):
                            return None
                if job is not None:
                    self._generate(*job)
                elif not self._out:
                    self._generate_idle()

    def _take_job(self):
        """Under the lock: the head segment's next clip when it is due ((segment, start frame, frame count if
        the segment has ended, its audio from the feature slice's start, epoch)); a finished segment's marker."""
        F, sr, fps = self.num_frames, self.sample_rate, self.fps
        seg = self._segments[0]
        s = seg.done
        if seg.ended:
            n = frames_for_duration(seg.total, sr, fps)
            if s >= n:
                self._segments.popleft()
                self._out.append(_END)
                return None
        else:
            if self._closed or seg.total < -(-(s + F) * sr // fps) + self.lookahead_samples:
                return None
            n = None
        a0 = max(0, (s - self._ctx) // self._q * self._q)
        return seg, s, n, a0, seg.audio(a0 * sr // fps), self._epoch

    def _denoise(self, rows: torch.Tensor) -> torch.Tensor:
        return self._engine.denoise(rows[None])

    @property
    def clips_generated(self) -> int:
        """Clips denoised so far, speech and idle (the index that seeds a stochastic sampler's next clip)."""
        return self._engine.clips

    def _generate(self, seg: _Segment, s: int, n: Optional[int], a0: int, wav: np.ndarray, epoch: int) -> None:
        """One clip of speech: rows as AudioFeatures.rows would give them for the whole segment (frames past an
        ended segment repeat its last frame), denoise, decode the frames shown."""
        F, w, sr, fps = self.num_frames, self.window, self.sample_rate, self.fps
        base = a0 * sr // fps
        # the features see the clip's audio plus exactly the lookahead (zeros past it), however much was pushed, so
        # the frames do not depend on chunk timing; an ended segment is seen to its end, as offline. Frames past
        # the windows' reach are computed for a front end whose every output reads all its input (wav2vec2)
        hi = s + F + max(w, self.lookahead_samples * fps // sr)
        if n is None:
            feat_wav = wav[:-(-(s + F) * sr // fps) + self.lookahead_samples - base]
        else:
            feat_wav, hi = wav, min(hi, n)
        with torch.profiler.record_function("fada.audio_features"):
            feats = self.pipe.frontend.frame_features(feat_wav, hi - a0, fps).float().cpu()
        idx = torch.arange(s, s + F)
        if n is not None:
            idx = idx.clamp(max=n - 1)
        idx = (idx[:, None] + torch.arange(-w, w + 1)[None]).clamp(0, hi - 1) - a0
        z = self._denoise(feats[idx])
        k = F if n is None else min(F, n - s)
        images = self.pipe.decode_frames(z[0, :, :k].transpose(0, 1))
        audio = [wav[(f * sr // fps) - base:((f + 1) * sr // fps) - base].copy() for f in range(s, s + k)]
        with self._lock:
            if epoch != self._epoch:  # cleared meanwhile: nothing of this clip is shown
                return
            seg.done = s + k
            # keep the next clip's left context only: a long session's memory stays flat
            seg.trim(max(0, (seg.done - self._ctx) // self._q * self._q) * sr // fps)
            self._out.extend((im, a, False) for im, a in zip(images, audio))

    def _generate_idle(self) -> None:
        """One clip of the model on silence (the face keeps living between utterances)."""
        F, w, sr, fps = self.num_frames, self.window, self.sample_rate, self.fps
        if self._silence is None:
            zeros = np.zeros(-(-(F + 2 * w) * sr // fps) + self.lookahead_samples + sr, np.float32)
            feats = self.pipe.frontend.frame_features(zeros, F + 2 * w, fps).float().cpu()
            self._silence = feats[torch.arange(w, w + F)[:, None] + torch.arange(-w, w + 1)[None]]
        with self._lock:
            epoch = self._epoch
        z = self._denoise(self._silence)
        images = self.pipe.decode_frames(z[0].transpose(0, 1))
        with self._lock:
            if epoch == self._epoch:
                self._out.extend((im, np.zeros((f + 1) * sr // fps - f * sr // fps, np.float32), True)
                                 for f, im in enumerate(images))


def _mono(pcm, sample_rate, channels) -> np.ndarray:
    """Validated PCM -> float32 mono at its own rate (one-line FadaErrors)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise FadaError(f"push_audio: sample_rate {sample_rate!r}: expected a positive integer")
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise FadaError(f"push_audio: channels {channels!r}: expected a positive integer")
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        if len(pcm) % 2:
            raise FadaError("push_audio: raw PCM bytes are read as int16 and need an even length")
        pcm = np.frombuffer(pcm, dtype=np.int16)
    if not isinstance(pcm, np.ndarray):
        raise FadaError(f"push_audio: expected a numpy array or int16 bytes, got {type(pcm).__name__}")
    if pcm.dtype == np.int16:
        x = pcm.astype(np.float32) / 32768.0
    elif pcm.dtype in (np.float32, np.float64):
        x = pcm.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise FadaError("push_audio: the PCM holds NaN or infinite samples")
    else:
        raise FadaError(f"push_audio: dtype {pcm.dtype}: expected float32 in [-1, 1] or int16")
    if x.ndim == 1:
        if x.size % channels:
            raise FadaError(f"push_audio: {x.size} interleaved samples are not a multiple of {channels} channels")
        x = x.reshape(-1, channels)
    elif x.ndim != 2 or x.shape[1] != channels:
        raise FadaError(f"push_audio: shape {tuple(x.shape)}: expected (samples,) interleaved or "
                        f"(samples, {channels})")
    return x[:, 0].copy() if channels == 1 else x.mean(axis=1, dtype=np.float32)
