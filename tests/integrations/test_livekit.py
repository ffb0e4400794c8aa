"""The LiveKit Agents adapter (fada.integrations.livekit) with LiveKit's own frame types and no server: frames equal a
plain session's for the same audio and seed, audio frames carry each frame's samples, segment ends, idle frames,
interruption, the real AvatarRunner end to end (a stand-in room), bad input, the missing-extra message."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarRunner, QueueAudioOutput  # noqa: E402

from fada.errors import FadaError  # noqa: E402
from fada.integrations.livekit import FadaVideoGenerator, avatar_options  # noqa: E402
from fada.models.audio import frames_for_duration  # noqa: E402

from ..stages.generate_helpers import SR, _isolated_cache, astronaut, fast_pipe, models  # noqa: E402,F401

RATE = 48000


@pytest.fixture(scope="module")
def pipe(fast_pipe):
    return fast_pipe


@pytest.fixture(scope="module")
def image(astronaut):
    return astronaut


def tone(seconds: float) -> np.ndarray:
    """Interleaved int16 stereo at 48 kHz: a 220 Hz / 330 Hz pair under a syllable-rate envelope."""
    t = np.arange(int(seconds * RATE)) / RATE
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    st = np.stack([np.sin(2 * np.pi * 220 * t), 0.6 * np.sin(2 * np.pi * 330 * t)], axis=1) * env[:, None] * 0.4
    return np.round(st * 32767).astype(np.int16).reshape(-1)


def chunks(pcm: np.ndarray) -> list:
    """10 and 20 ms interleaved pieces, alternating, as a TTS stream arrives."""
    out, i, k = [], 0, 0
    while i < len(pcm):
        n = 2 * RATE * (10, 20)[k % 2] // 1000
        out.append(pcm[i:i + n])
        i, k = i + n, k + 1
    return out


def audio_frame(piece: np.ndarray) -> rtc.AudioFrame:
    return rtc.AudioFrame(piece.tobytes(), RATE, 2, len(piece) // 2)


def reference(pipe, image, pieces, seed, take=None):
    """A plain session fed the same PCM (numpy, not AudioFrames): its frames, then after a clear (``take`` frames
    in) or the segment's end, one idle clip."""
    s = pipe.session(image, seed=seed)
    for p in pieces:
        s.push_audio(p, RATE, channels=2)
    if take is None:
        s.end_segment()
        speech = list(s)
    else:
        speech = [next(s) for _ in range(take)]
        s.clear()
    return speech, s.next_idle_clip()


def pixels(frame: rtc.VideoFrame) -> np.ndarray:
    return np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)


def int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


def test_speech_then_idle_match_the_session(pipe, image, monkeypatch):
    pieces = chunks(tone(0.9))
    threads = set()
    decode = pipe.decode_frames

    def spy(z):
        threads.add(threading.get_ident())
        return decode(z)

    async def run():
        monkeypatch.setattr(pipe, "decode_frames", spy)
        gen = FadaVideoGenerator(pipe.session(image, seed=3))
        for p in pieces:
            await gen.push_audio(audio_frame(p))
        await gen.push_audio(AudioSegmentEnd())
        it, items = aiter(gen), []
        while not items or not isinstance(items[-1], AudioSegmentEnd):
            items.append(await anext(it))
        idle = [await anext(it) for _ in range(gen.session.num_frames)]
        monkeypatch.setattr(pipe, "decode_frames", decode)
        return gen, items, idle, threading.get_ident()

    gen, items, idle, loop_thread = asyncio.run(run())
    want, want_idle = reference(pipe, image, pieces, seed=3)
    s, opts = gen.session, gen.options
    n = frames_for_duration(len(tone(0.9)) // 2 * SR // RATE, SR, s.fps)
    assert n == len(want) - 1 > s.num_frames  # more than one clip of speech
    # video, audio, video, audio, ..., AudioSegmentEnd: the end comes after the last speech frame
    assert len(items) == 2 * n + 1
    assert all(isinstance(v, rtc.VideoFrame) for v in items[0:-1:2])
    assert all(isinstance(a, rtc.AudioFrame) for a in items[1:-1:2])
    (h, w), spf = s.image.shape[:2], SR // s.fps
    assert (opts.video_width, opts.video_height, opts.video_fps, opts.audio_sample_rate, opts.audio_channels) == \
        (w, h, s.fps, SR, 1) == (avatar_options(s).video_width, h, 25, 16000, 1)
    for v, a, f in zip(items[0:-1:2], items[1:-1:2], want[:-1]):
        assert (v.type, v.width, v.height) == (rtc.VideoBufferType.RGB24, w, h)
        assert np.array_equal(pixels(v), f.image)
        assert (a.sample_rate, a.num_channels, a.samples_per_channel) == (SR, 1, spf)
        assert np.array_equal(np.frombuffer(a.data, np.int16), int16(f.audio))
    # the audio is the tone itself: the mean of the channels resampled to 16 kHz, frame after frame
    import soxr

    mono = tone(0.9).reshape(-1, 2).astype(np.float32).mean(axis=1) / 32768
    got = np.concatenate([np.frombuffer(a.data, np.int16) for a in items[1:-1:2]]) / 32768
    assert len(got) == n * spf and np.abs(got).max() > 0.1
    assert np.abs(got - soxr.resample(mono, RATE, SR, quality="HQ")[:len(got)]).max() < 2e-3
    # then idle frames, video only: the model on silence, the same clip a plain session makes next
    assert all(isinstance(v, rtc.VideoFrame) for v in idle)
    assert np.array_equal(np.stack([pixels(v) for v in idle]), np.stack([f.image for f in want_idle]))
    assert not np.array_equal(pixels(idle[0]), pixels(items[-3]))
    assert threads and loop_thread not in threads  # speech and idle clips decoded off the event loop


def test_clear_buffer_mid_speech_goes_idle(pipe, image):
    pieces = chunks(tone(1.5))

    async def run():
        gen = FadaVideoGenerator(pipe.session(image, seed=1))
        for p in pieces:
            await gen.push_audio(audio_frame(p))
        it, before = aiter(gen), []
        while sum(isinstance(x, rtc.VideoFrame) for x in before) < 3:
            before.append(await anext(it))
        gen.clear_buffer()  # the third frame's audio is not out yet: it is dropped with the rest
        assert not gen.session.speech_pending
        after = [await anext(it) for _ in range(gen.session.num_frames)]
        # speech again after the interruption: only the new utterance ends
        for p in chunks(tone(0.5)):
            await gen.push_audio(audio_frame(p))
        await gen.push_audio(AudioSegmentEnd())
        rest = []
        while not rest or not isinstance(rest[-1], AudioSegmentEnd):
            rest.append(await anext(it))
        return gen, before, after, rest

    gen, before, after, rest = asyncio.run(run())
    want, want_idle = reference(pipe, image, pieces, seed=1, take=3)
    assert [type(x) for x in before] == [rtc.VideoFrame, rtc.AudioFrame] * 2 + [rtc.VideoFrame]
    assert all(isinstance(x, rtc.VideoFrame) for x in after)  # idle at once, no audio, no segment end
    assert np.array_equal(np.stack([pixels(v) for v in after]), np.stack([f.image for f in want_idle]))
    assert np.array_equal(np.stack([pixels(v) for v in before[0::2]]), np.stack([f.image for f in want]))
    n = frames_for_duration(round(0.5 * SR), SR, gen.session.fps)
    audio = [x for x in rest if isinstance(x, rtc.AudioFrame)]
    assert len(audio) == n and sum(isinstance(x, AudioSegmentEnd) for x in rest) == 1


class _Publication:
    async def wait_for_subscription(self):
        pass


class _Participant:
    async def publish_track(self, track, options):
        return _Publication()


class _Room:
    """What AvatarRunner uses of an ``rtc.Room``, connected, with nobody at the other end."""

    local_participant = _Participant()

    def on(self, *args):
        pass

    def off(self, *args):
        pass

    def isconnected(self):
        return True


async def until(condition, timeout=20.0):
    """Waits on the runner's own pace, not a fixed sleep: the shared test machine may be slow."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def test_avatar_runner_end_to_end(pipe, image):
    """LiveKit's AvatarRunner and AVSynchronizer pace the generator in real time: the agent's audio output sees the
    playback start and finish at the utterance's length, an interruption reports interrupted, and LiveKit's video
    source accepts every frame."""

    async def run():
        gen = FadaVideoGenerator(pipe.session(image, seed=2))
        agent_audio = QueueAudioOutput()
        events = []
        agent_audio.on("playback_started", lambda ev: events.append("started"))
        agent_audio.on("playback_finished", lambda ev: events.append(ev))
        runner = AvatarRunner(_Room(), audio_recv=agent_audio, video_gen=gen, options=gen.options)
        pushed = []
        push = runner.av_sync.push

        async def spy(frame, timestamp=None):
            pushed.append(frame)
            await push(frame, timestamp)

        runner.av_sync.push = spy
        clear, cleared_at = gen.clear_buffer, []
        gen.clear_buffer = lambda: (cleared_at.append(len(pushed)), clear())
        await runner.start()
        try:
            for p in chunks(tone(0.6)):
                await agent_audio.capture_frame(audio_frame(p))
            agent_audio.flush()
            first = await asyncio.wait_for(agent_audio.wait_for_playout(), 20)
            sent = lambda: sum(isinstance(f, rtc.AudioFrame) for f in pushed)  # noqa: E731
            before = sent()
            for p in chunks(tone(2.0)):
                await agent_audio.capture_frame(audio_frame(p))
            await until(lambda: sent() >= before + 10)  # it is playing
            agent_audio.clear_buffer()
            second = await asyncio.wait_for(agent_audio.wait_for_playout(), 20)
            await until(lambda: len(pushed) >= cleared_at[0] + gen.session.num_frames)  # a clip after the clear
            return gen, events, first, second, pushed, cleared_at
        finally:
            await runner.aclose()

    gen, events, first, second, pushed, cleared_at = asyncio.run(run())
    n = frames_for_duration(round(0.6 * SR), SR, gen.session.fps)
    assert not first.interrupted and first.playback_position == pytest.approx(n / gen.session.fps)
    assert second.interrupted and 9.5 / gen.session.fps < second.playback_position < 1.5
    assert events[0] == "started" and events[1] is first and events[2] == "started" and events[3] is second
    assert len(pushed) > 2 * n and all(isinstance(f, (rtc.VideoFrame, rtc.AudioFrame)) for f in pushed)
    # after the interruption only idle video went out; the runner counted all the audio but the frame that was in
    # its synchronizer's push when the clear came
    assert len(cleared_at) == 1
    assert all(isinstance(f, rtc.VideoFrame) for f in pushed[cleared_at[0]:])
    audio_sent = sum(f.duration for f in pushed if isinstance(f, rtc.AudioFrame))
    assert 0 <= audio_sent - first.playback_position - second.playback_position < 1.5 / gen.session.fps


def test_bad_input_is_one_line(pipe, image):
    gen = FadaVideoGenerator(pipe.session(image))
    for bad in (b"\0\0" * 160, np.zeros(160, np.int16), None):
        with pytest.raises(FadaError, match="expected an rtc.AudioFrame or AudioSegmentEnd") as e:
            asyncio.run(gen.push_audio(bad))
        assert "\n" not in str(e.value)
    with pytest.raises(FadaError, match="AvatarSession"):
        FadaVideoGenerator(pipe)
    assert not gen.session.speech_pending


def test_missing_livekit_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "fada.integrations.livekit", raising=False)
    monkeypatch.setitem(sys.modules, "livekit.agents.voice.avatar", None)  # as if the package were not installed
    with pytest.raises(FadaError) as e:
        importlib.import_module("fada.integrations.livekit")
    msg = str(e.value)
    assert 'pip install -e ".[livekit]"' in msg and "\n" not in msg
