"""A LiveKit Agents avatar: fada's streaming ``AvatarSession`` as the ``VideoGenerator`` an ``AvatarRunner`` drives.

    from livekit.agents.voice.avatar import AvatarRunner
    from fada.integrations.livekit import FadaVideoGenerator

    video_gen = FadaVideoGenerator(pipe.session("portrait.png", mode="fast"))
    runner = AvatarRunner(room, audio_recv=audio_recv, video_gen=video_gen, options=video_gen.options)
    await runner.start()

The runner feeds the agent's speech in (``push_audio``: audio frames, then ``AudioSegmentEnd`` when an utterance is
over), calls ``clear_buffer`` when the user interrupts, and pushes what ``async for`` yields into its
``AVSynchronizer``, whose bounded queues pace the iteration at the model's fps: a clip is generated when the runner
asks for its first frame, not ahead of time. Generation runs in worker threads (the session's ``__anext__``), idle
clips included, so the event loop that carries the room's media never waits on the model.

What the iteration yields, and why:

- each frame as an ``rtc.VideoFrame`` of type RGB24: the session's own uint8 RGB pixels, no alpha plane to add;
  LiveKit's video source converts RGB24 to I420 as it does RGBA.
- after each speech frame, an ``rtc.AudioFrame`` holding exactly the samples that frame was generated from: mono
  int16 at the session's rate (the audio front end's; 16 kHz for fada's models). Both streams are cut from the same
  samples at the same frame boundaries, so lips and sound stay in step however long the session runs and whatever
  rate the agent's TTS uses; slicing the input at its own rate instead would need a second clock kept in step with
  the session's resampler. The price is audio limited to the front end's band, which is wideband speech.
  ``options`` tells the runner's ``AudioSource`` that rate.
- ``AudioSegmentEnd`` after an utterance's last frame, so the runner reports the playback finished to the agent.
- idle frames (the model on silence) whenever no speech is queued, as video only: audio there would make the runner
  report a playback start and count silence into the playback position it reports when the user interrupts.
"""

from __future__ import annotations

from typing import AsyncIterator, Union

import numpy as np

from fada.errors import FadaError
from fada.session import AvatarSession, SegmentEnd

try:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator
except ImportError as e:  # one line, as every FadaError: the CLI prints it without a traceback
    raise FadaError(f'fada.integrations.livekit needs LiveKit Agents ({e}): pip install -e ".[livekit]" from the '
                    'repository') from None

__all__ = ["FadaVideoGenerator", "avatar_options"]


def avatar_options(session: AvatarSession) -> AvatarOptions:
    """The ``AvatarRunner`` options that match what a ``FadaVideoGenerator`` on ``session`` yields: the portrait's
    size (the model's resolution), the session's fps, mono audio at the session's rate."""
    height, width = session.image.shape[:2]
    return AvatarOptions(video_width=int(width), video_height=int(height), video_fps=session.fps,
                         audio_sample_rate=session.sample_rate, audio_channels=1)


class FadaVideoGenerator(VideoGenerator):
    """``VideoGenerator`` over an ``AvatarSession`` (see the module docstring). The session is switched to idle
    mode: a room's video track needs frames between utterances too. ``options``: the ``AvatarOptions`` to give
    the runner. ``aclose()`` closes the session, which ends the iteration once ended utterances are out."""

    def __init__(self, session: AvatarSession):
        if not isinstance(session, AvatarSession):
            raise FadaError(f"FadaVideoGenerator: expected a fada AvatarSession (pipe.session(portrait)), got "
                            f"{type(session).__name__}")
        session.idle = True
        self.session = session
        self.options = avatar_options(session)
        # bumped by clear_buffer: speech fetched from the session across a clear, or a frame's audio not yet
        # yielded at it, belongs to the interrupted utterance and is dropped
        self._epoch = 0

    async def push_audio(self, frame: Union[rtc.AudioFrame, AudioSegmentEnd]) -> None:
        """An ``rtc.AudioFrame`` (int16 at any rate and channel count; the session mixes to mono and resamples) is
        queued; an ``AudioSegmentEnd`` ends the utterance, so its last partial clip is generated. Anything else
        raises a one-line FadaError."""
        if isinstance(frame, AudioSegmentEnd):
            self.session.end_segment()
        elif isinstance(frame, rtc.AudioFrame):
            pcm = np.frombuffer(frame.data, dtype=np.int16)[:frame.samples_per_channel * frame.num_channels]
            self.session.push_audio(pcm, frame.sample_rate, frame.num_channels)
        else:
            raise FadaError(f"FadaVideoGenerator.push_audio: expected an rtc.AudioFrame or AudioSegmentEnd, got "
                            f"{type(frame).__name__}")

    def clear_buffer(self) -> None:
        """Interruption: queued audio and frames not yet yielded are dropped and the avatar goes back to idle
        frames, the face continuing from where it was. The runner itself then tells the agent the playback was
        interrupted, at the position it counted from the audio frames yielded so far."""
        self._epoch += 1
        self.session.clear()

    async def aclose(self) -> None:
        self.session.close()

    def __aiter__(self) -> AsyncIterator[Union[rtc.VideoFrame, rtc.AudioFrame, AudioSegmentEnd]]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Union[rtc.VideoFrame, rtc.AudioFrame, AudioSegmentEnd]]:
        session, rate = self.session, self.session.sample_rate
        width, height = self.options.video_width, self.options.video_height
        while True:
            epoch = self._epoch
            try:
                item = await anext(session)
            except StopAsyncIteration:
                return
            speech = isinstance(item, SegmentEnd) or not item.idle
            if speech and epoch != self._epoch:
                continue
            if isinstance(item, SegmentEnd):
                yield AudioSegmentEnd()
                continue
            yield rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, np.ascontiguousarray(item.image).tobytes())
            if speech and epoch == self._epoch and item.audio.size:
                pcm = np.clip(np.rint(item.audio * 32768.0), -32768, 32767).astype(np.int16)
                yield rtc.AudioFrame(pcm.tobytes(), rate, 1, pcm.size)
