"""Streaming sessions (fada.session): streamed audio gives the offline frames exactly, timestamps and audio slices,
interruption and idle frames, motion carried across segments, input checks, resampling, async iteration, flat
memory."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from fada.errors import FadaError
from fada.models.audio import frames_for_duration
from fada.session import AvatarSession, SegmentEnd, SessionFrame

from .stages.generate_helpers import SR, _isolated_cache, astronaut, fast_pipe, models, speech  # noqa: F401


@pytest.fixture(scope="module")
def pipe(fast_pipe):
    return fast_pipe


@pytest.fixture(scope="module")
def image(astronaut):
    return astronaut


def _drain(session):
    return list(session)


def _push_in_chunks(session, audio, chunk, drain=True):
    got = []
    for i in range(0, len(audio), chunk):
        session.push_audio(audio[i:i + chunk], SR)
        if drain:
            got += _drain(session)
    return got


@pytest.mark.parametrize("chunk", [160, 592, None])  # 10 ms, 37 ms, one block
def test_streamed_frames_equal_generate_frames(pipe, image, chunk):
    audio = speech(1.5)
    want = np.concatenate(list(pipe.generate_frames(image, audio, seed=3)))
    s = pipe.session(image, seed=3)
    early = _push_in_chunks(s, audio, chunk or len(audio))
    if chunk:
        assert len(early) >= s.num_frames  # clips come out while audio is still arriving
    s.end_segment()
    items = early + _drain(s)
    assert isinstance(items[-1], SegmentEnd) and all(isinstance(f, SessionFrame) for f in items[:-1])
    frames = items[:-1]
    n = frames_for_duration(len(audio), SR, s.fps)
    assert len(frames) == n == len(want)
    assert np.array_equal(np.stack([f.image for f in frames]), want)
    assert [f.index for f in frames] == list(range(n))
    assert np.allclose(np.diff([f.timestamp for f in frames]), 1 / s.fps)
    assert items[-1].timestamp == pytest.approx(n / s.fps)
    spf = SR // s.fps
    assert all(len(f.audio) == spf for f in frames)
    assert np.array_equal(np.concatenate([f.audio for f in frames]), audio[:n * spf])
    assert _drain(s) == []


def _record_rows(pipe, monkeypatch) -> list:
    """The audio rows of every clip the pipeline denoises, appended to the returned list."""
    rows, real = [], pipe.denoise_clip

    def recording(plan, bank, feats, *a, **k):
        rows.append(feats.clone())
        return real(plan, bank, feats, *a, **k)

    monkeypatch.setattr(pipe, "denoise_clip", recording)
    return rows


def test_default_lookahead_covers_the_front_ends_reach(pipe, image, monkeypatch):
    """The rows a session gives the denoiser equal the offline rows at the default lookahead (the window's frames plus
    half an STFT) and 4 ms below it, and differ 6 ms below it: at 25 fps a frame's last STFT column is centred 64
    samples before the frame's end, so its window reaches 192 samples past it; the default (256) covers any fps."""
    rows = _record_rows(pipe, monkeypatch)
    audio = speech(1.5)
    list(pipe.generate_frames(image, audio, seed=0, overlap=False))
    offline = torch.cat(rows)
    streamed = []
    for short in (0, 64, 96):
        rows.clear()
        s = pipe.session(image, seed=0)
        if short:
            s = pipe.session(image, seed=0, lookahead_ms=(s.lookahead_samples - short) * 1000 / SR)
        _push_in_chunks(s, audio, 160)
        s.end_segment()
        _drain(s)
        streamed.append(torch.cat(rows))
    assert torch.equal(streamed[0], offline) and torch.equal(streamed[1], offline)
    assert streamed[2].shape == offline.shape and not torch.equal(streamed[2], offline)


def test_short_lookahead_features_do_not_depend_on_chunking(pipe, image, monkeypatch):
    """Below the default lookahead a clip's features see exactly ``lookahead_ms`` past its end (zeros beyond), not
    whatever audio happened to be pushed when it was generated: the same audio in 10 ms chunks or in one block
    gives the same rows."""
    rows = _record_rows(pipe, monkeypatch)
    audio = speech(1.5)
    got = []
    for chunk in (160, len(audio)):
        rows.clear()
        s = pipe.session(image, seed=1, lookahead_ms=10)
        _push_in_chunks(s, audio, chunk)
        got.append(torch.cat(rows))
    assert len(got[0]) == len(got[1]) >= 2  # clips
    assert torch.equal(got[0], got[1])


def test_clear_then_idle_frames_from_silence(pipe, image):
    s = AvatarSession(pipe, image, seed=1)
    s.push_audio(speech(1.5), SR)
    first = [next(s) for _ in range(3)]
    s.clear()
    assert not s.speech_pending and _drain(s) == []  # the rest of the clip and the queued audio are gone
    idle = list(s.idle_frames(max_frames=s.num_frames))
    assert len(idle) == s.num_frames and [f.index for f in idle] == list(range(3, 3 + s.num_frames))
    assert all(not f.audio.any() for f in idle) and idle[0].timestamp == pytest.approx(3 / s.fps)
    assert all(f.idle for f in idle) and not any(f.idle for f in first)  # players send no audio for idle frames
    # the same clip of silence a session with idle=True generates after those frames, images included
    t = AvatarSession(pipe, image, seed=1, idle=True)
    t.push_audio(speech(1.5), SR)
    for _ in range(3):
        next(t)
    t.clear()
    again = [next(t) for _ in range(s.num_frames)]
    assert np.array_equal(np.stack([f.image for f in again]), np.stack([f.image for f in idle]))
    assert first[0].audio.any()
    # speech queued: idle generation stops and speech follows
    s.push_audio(speech(0.5), SR)
    assert list(s.idle_frames()) == []
    s.end_segment()
    assert isinstance(_drain(s)[-1], SegmentEnd)


def test_motion_carries_over_segments(pipe, image):
    s = pipe.session(image, seed=2)
    for seconds in (0.7, 0.5):
        s.push_audio(speech(seconds, seed=int(seconds * 10)), SR)
        s.end_segment()
    items = _drain(s)
    ends = [i for i, x in enumerate(items) if isinstance(x, SegmentEnd)]
    n1, n2 = frames_for_duration(int(0.7 * SR), SR, s.fps), frames_for_duration(int(0.5 * SR), SR, s.fps)
    assert ends == [n1, n1 + n2 + 1]
    assert [x.index for x in items if isinstance(x, SessionFrame)] == list(range(n1 + n2))  # one timeline
    F = s.num_frames
    assert s.clips_generated == -(-n1 // F) + -(-n2 // F)  # the clip counter (noise seeding) kept counting
    # the second segment starts from the first one's last latents, not from the reference: its frames differ
    # from a fresh session's on the same audio with the same noise
    fresh = pipe.session(image, seed=2)
    fresh.push_audio(speech(0.5, seed=5), SR)
    fresh.end_segment()
    fresh_frames = [x.image for x in _drain(fresh)[:-1]]
    e = s._engine
    assert not torch.equal(e.motion, e.ref[:, None].expand_as(e.motion))
    assert not np.array_equal(items[n1 + 1].image, fresh_frames[0])
    # and the face continues: the first frame after the boundary is closer to the last one before it
    last = items[n1 - 1].image.astype(float)
    assert np.abs(items[n1 + 1].image - last).mean() <= np.abs(fresh_frames[0] - last).mean() + 1.0


def test_bad_input_is_one_line_and_the_session_goes_on(pipe, image):
    s = pipe.session(image)
    bad = [(np.ones(100, np.int32), SR, 1), (np.array([0.1, np.nan], np.float32), SR, 1),
           (np.ones(101, np.float32), SR, 2), (np.ones((10, 3), np.float32), SR, 2), ("pcm", SR, 1),
           (np.ones(10, np.float32), 0, 1), (np.ones(10, np.float32), SR, 0), (b"\x00\x01\x02", SR, 1)]
    for pcm, rate, ch in bad:
        with pytest.raises(FadaError) as e:
            s.push_audio(pcm, rate, ch)
        assert "\n" not in str(e.value) and str(e.value)
    assert s.buffered_samples == 0
    s.push_audio(speech(0.4), SR)
    s.end_segment()
    items = _drain(s)
    assert len(items) == frames_for_duration(int(0.4 * SR), SR, s.fps) + 1
    s.close()
    with pytest.raises(FadaError, match="closed"):
        s.push_audio(speech(0.1), SR)
    with pytest.raises(FadaError):
        AvatarSession(pipe, image, lookahead_ms=-1)


def test_audio_inside_the_resampler_is_pending_speech(pipe, image):
    """20 ms at 48 kHz can sit wholly inside the resampler: it is still speech, so no idle clip is made for it."""
    s = pipe.session(image, idle=True)
    s.push_audio((np.ones(960) * 1000).astype(np.int16).tobytes(), 48000)
    assert s.speech_pending
    assert _drain(s) == [] and s.clips_generated == 0


def test_int16_stereo_44k_is_mixed_and_resampled(pipe, image):
    import librosa

    mono = speech(1.0, sr=44100)
    stereo = np.stack([mono * 0.5, mono * 1.5], axis=1)  # mixed: the mean of the channels is `mono`
    pcm = np.round(stereo * 32767).astype(np.int16).reshape(-1)  # interleaved
    s = pipe.session(image)
    for i in range(0, len(pcm), 2 * 441):  # 10 ms stereo chunks
        s.push_audio(pcm[i:i + 2 * 441], 44100, channels=2)
    s.end_segment()
    frames = _drain(s)[:-1]
    want = librosa.resample(mono, orig_sr=44100, target_sr=SR)
    assert len(frames) == frames_for_duration(len(want), SR, s.fps)
    got = np.concatenate([f.audio for f in frames])
    assert np.abs(got - want[:len(got)]).max() < 2e-3  # int16 quantisation; one soxr stream ~ one soxr call
    s.push_audio(pcm.tobytes(), 44100, channels=2)  # raw int16 bytes, as LiveKit's AudioFrame.data
    assert s.buffered_samples > 0.9 * SR


def test_async_iteration(pipe, image):
    """A producer pushes 20 ms chunks while `async for` consumes: frames come out as clips become due."""
    s = pipe.session(image, seed=3)
    audio = speech(0.7)

    async def produce():
        for i in range(0, len(audio), SR // 50):
            s.push_audio(audio[i:i + SR // 50], SR)
            await asyncio.sleep(0.002)
        s.end_segment()
        s.close()

    async def consume():
        return [x async for x in s]

    async def run():
        return (await asyncio.gather(produce(), consume()))[1]

    items = asyncio.run(run())
    n = frames_for_duration(len(audio), SR, s.fps)
    assert len(items) == n + 1 and isinstance(items[-1], SegmentEnd)
    want = np.concatenate(list(pipe.generate_frames(image, audio, seed=3)))
    assert np.array_equal(np.stack([f.image for f in items[:-1]]), want)


def test_memory_stays_flat(pipe, image, monkeypatch):
    """60 s pushed in 20 ms chunks and consumed as it comes: the audio held stays a few seconds (the denoiser, the
    bank and the decoder are stubbed to keep the test fast; the bookkeeping is the session's own)."""
    monkeypatch.setattr(pipe, "denoise_clip", lambda plan, bank, rows, noise, *a, **k: noise)
    monkeypatch.setattr(pipe, "decode_frames", lambda z: np.zeros((len(z), 1, 1, 3), np.uint8))
    monkeypatch.setattr(pipe, "encode_bank", lambda ref, motion, ref_bank=None: ref_bank)
    s = pipe.session(image)
    audio = speech(4.0)
    most, frames = 0, 0
    for rep in range(15):
        for i in range(0, len(audio), SR // 50):
            s.push_audio(audio[i:i + SR // 50], SR)
            frames += sum(isinstance(x, SessionFrame) for x in _drain(s))
            most = max(most, s.buffered_samples)
    assert frames >= 60 * s.fps - 2 * s.num_frames
    assert s.buffered_samples < most < SR  # a clip + context + lookahead + a chunk (< 0.5 s), not 60 s


def test_lookahead_and_refusals(pipe, image, monkeypatch):
    F = pipe.model_cfg.num_frames
    clip = np.tile(speech(0.5), 2)[:F * SR // pipe.model_cfg.fps]  # exactly one clip of audio
    eager = pipe.session(image, lookahead_ms=0)
    eager.push_audio(clip, SR)
    assert len(_drain(eager)) == F  # no lookahead: due at once
    patient = pipe.session(image)
    assert patient.lookahead_samples == 2 * SR // patient.fps + 256  # the window's frames + half an STFT
    patient.push_audio(clip, SR)
    assert _drain(patient) == []
    patient.push_audio(np.zeros(patient.lookahead_samples, np.float32), SR)
    assert len(_drain(patient)) == F
    monkeypatch.setattr(pipe.frontend, "whole_utterance", True, raising=False)
    with pytest.raises(FadaError, match="whole utterance") as e:
        pipe.session(image)
    assert "\n" not in str(e.value)


def test_clear_while_a_clip_is_generated_drops_it(pipe, image, monkeypatch):
    """clear() from another thread lands while a clip denoises: none of that clip's frames come out."""
    s = pipe.session(image, idle=True)
    real = pipe.denoise_clip
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            s.clear()
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe, "denoise_clip", interrupted)
    s.push_audio(speech(1.0), SR)
    frame = next(s)  # the speech clip was dropped; with idle=True the next frame is the model on silence
    assert len(calls) == 2 and frame.index == 0 and not frame.audio.any() and not s.speech_pending
