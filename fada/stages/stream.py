"""``fada stream``: a streaming session driven end to end from the command line, as a live avatar would run.

A feeder thread pushes the audio (a file, or raw s16le PCM from stdin for ``-``) into an ``AvatarSession`` in
``chunk_ms`` chunks, at real-time pace by default (it sleeps to the wall clock, as a microphone or a TTS stream
would deliver it) or as fast as it can with ``pace=False``; at EOF it ends the segment and closes the session. The
main thread pulls frames as they are ready and writes each one with its audio slice to a fragmented mp4 (playable
while it is written). Timings, all from the wall clock (``time.perf_counter``), with t0 = the first audio push:

- first-frame latency L = ready_0 - t0 (ready_j: when frame j came out of the session);
- lateness_j = ready_j - (t0 + L + B + timestamp_j): playback starts B (``buffer_ms``, a jitter buffer; 0 by
  default) after the first frame is ready and then runs at the model's fps, so frame j is due at
  t0 + L + B + timestamp_j; a frame with lateness > 0 would stall the player;
- real-time factor = (ready_last - t0) / audio seconds (paced runs cannot go below about 1).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from fada.errors import FadaError
from fada.stages.generate import _check_file, check_modes, check_output, resolve_model


@dataclass(frozen=True)
class StreamResult:
    path: Path
    frames: int
    fps: int
    audio_seconds: float
    first_frame_latency: float  # seconds from the first audio push to the first frame ready
    playout_delay: float        # seconds from the first audio push to the first frame shown: latency + buffer
    max_lateness: float         # seconds, max over frames of lateness_j (see the module docstring); <= 0: never late
    late_frames: int            # frames with lateness_j > 0
    realtime_factor: float      # generation wall time / audio seconds
    idle_frames: int            # frames of the model on silence (0: idle is not used here)
    seconds: float              # wall time of the whole streamed run (first push to file closed)


def _stdin_bytes():
    return getattr(sys.stdin, "buffer", sys.stdin)


class _Feeder(threading.Thread):
    """Pushes audio into the session chunk by chunk, then ends the segment and closes the session. An error is kept
    in ``error`` (the main thread raises it) and closes the session so the main loop ends."""

    def __init__(self, session, source, sample_rate: int, channels: int, chunk_ms: float, pace: bool):
        super().__init__(daemon=True)  # daemon: a blocked stdin read must not keep the process alive after an error
        self.session, self.source, self.pace = session, source, pace
        self.sample_rate, self.channels = sample_rate, channels
        self.chunk = max(1, int(round(sample_rate * chunk_ms / 1000.0)))
        self.t0: Optional[float] = None
        self.samples = 0            # sample frames (per channel) pushed
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self.stop = threading.Event()

    def _chunks(self):
        if isinstance(self.source, np.ndarray):  # a decoded file, mono float at sample_rate
            for i in range(0, self.source.size, self.chunk):
                yield self.source[i:i + self.chunk]
            return
        stream, frame = self.source, 2 * self.channels
        want, rest = self.chunk * frame, b""
        while True:
            data = stream.read(want - len(rest))
            if not data:
                break
            rest += data
            if len(rest) >= want:
                yield rest
                rest = b""
        if rest:
            n = len(rest) // frame * frame
            if n:
                yield rest[:n]
            if len(rest) - n:
                raise FadaError(f"stdin: {len(rest) - n} trailing byte(s) are not a whole s16le sample frame of "
                                f"{self.channels} channel(s)")

    def run(self):
        try:
            for chunk in self._chunks():
                if self.stop.is_set():
                    return
                n = len(chunk) // (2 * self.channels) if isinstance(chunk, bytes) else len(chunk)
                if self.t0 is None:
                    self.t0 = time.perf_counter()
                elif self.pace:  # chunk k holds audio from samples/sr on: it is pushed no earlier than that
                    delay = self.t0 + self.samples / self.sample_rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                self.session.push_audio(chunk, self.sample_rate, self.channels)
                self.samples += n
            if self.samples == 0:
                raise FadaError("stdin: no audio (expected raw s16le PCM)" if not isinstance(self.source, np.ndarray)
                                else "no audio samples")
            self.session.end_segment()
        except BaseException as e:  # noqa: BLE001 -- handed to the main thread
            self.error = e
        finally:
            try:
                self.session.close()
            finally:
                self.done.set()


def run(portrait, audio, model=None, out=None, mode: Optional[str] = None, seed: int = 0, no_crop: bool = False,
        sample_rate: int = 16000, channels: int = 1, pace: bool = True, lookahead_ms: Optional[float] = None,
        chunk_ms: float = 20, device=None, buffer_ms: float = 0.0, compile: bool = False,
        overwrite: bool = False) -> StreamResult:
    """Stream ``audio`` (a file, or ``-``: s16le PCM on stdin at ``sample_rate``/``channels``) through a session on
    ``portrait`` into the fragmented mp4 ``out`` (default ``<portrait>_stream.mp4``; an existing file is an error
    unless ``overwrite``); print and return the timings."""
    for name, v in (("--sample-rate", sample_rate), ("--channels", channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise FadaError(f"{name} {v!r}: must be a positive integer")
    if channels > 8:
        raise FadaError(f"--channels {channels}: at most 8 channels")
    if not (chunk_ms > 0):
        raise FadaError(f"chunk_ms {chunk_ms!r}: must be positive")
    if not (isinstance(buffer_ms, (int, float)) and 0 <= buffer_ms < 60_000):
        raise FadaError(f"--buffer-ms {buffer_ms!r}: must be between 0 and 60000")
    p = _check_file(portrait, "portrait image")
    from_stdin = str(audio) == "-"
    a = None if from_stdin else _check_file(audio, "audio file")
    out = check_output(Path(out).expanduser() if out is not None else Path(f"{p.stem}_stream.mp4"), overwrite)
    model_dir, why = resolve_model(model)
    check_modes(model_dir, [("", mode, False)])

    from fada.data.portrait import find_face, read_portrait

    image = read_portrait(p)  # fail fast, before a model loads
    if not no_crop:
        find_face(image, source=str(p))
    from fada.pipeline import FadaPipeline

    pipe = FadaPipeline.from_pretrained(model_dir, device=device)
    spec = pipe.spec
    print(f"model: {model_dir} (from {why}): {spec.kind} model, {spec.model.resolution}px, {spec.model.fps} fps, "
          f"{spec.model.num_frames} frames per clip, on {pipe.device}")
    if compile:  # before the session and the clock: the graphs are built on one clip of silence
        pipe.compile()
        secs = pipe.warm_up(p, mode=mode, crop=not no_crop)
        print(f"compiled ({pipe.compiled}) and warmed up in {secs:.1f} s, before the clock starts")
    session = pipe.session(p, mode=mode, seed=seed, crop=not no_crop, lookahead_ms=lookahead_ms)
    if from_stdin:
        source, rate, ch = _stdin_bytes(), int(sample_rate), int(channels)
    else:  # decoded at the session's own rate: no resampling in the session, the same samples as `fada generate`
        from fada.models.audio import load_audio

        source, rate, ch = load_audio(a, session.sample_rate), session.sample_rate, 1
    print(f"streaming {'stdin' if from_stdin else a} ({rate} Hz, {ch} ch) in {chunk_ms:g} ms chunks, "
          f"{'real-time pace' if pace else 'no pacing'}, lookahead {session.lookahead_samples} samples")

    from fada.data.media import VideoWriter

    feeder = _Feeder(session, source, rate, ch, chunk_ms, pace)
    ready, stamps = [], []
    writer = VideoWriter(out, session.fps, (pipe.resolution, pipe.resolution), sample_rate=session.sample_rate,
                         audio_stream=True, fragmented=True)
    with writer:  # opened before the clock starts; an error drops the partial file
        feeder.start()
        try:
            while True:
                done = feeder.done.is_set()  # read before draining: what was pushed before it is drained below
                got = False
                for item in session:  # generates a clip when one is due, on this thread
                    got = True
                    if hasattr(item, "image"):
                        ready.append(time.perf_counter())
                        stamps.append(item.timestamp)
                        writer.write(item.image)
                        writer.write_audio(item.audio)
                if done:
                    break
                if not got:
                    feeder.done.wait(0.002)
        except BaseException:
            feeder.stop.set()
            raise
        if feeder.error is not None:
            raise feeder.error
    t_end = time.perf_counter()
    if not ready:
        raise FadaError("no frames were generated (the audio is shorter than one frame)")
    t0 = feeder.t0
    latency = ready[0] - t0
    buffer = float(buffer_ms) / 1000.0
    late = np.asarray(ready) - (ready[0] + buffer + np.asarray(stamps))  # = ready_j - (t0 + L + B + timestamp_j)
    audio_seconds = feeder.samples / rate
    res = StreamResult(path=out, frames=len(ready), fps=session.fps, audio_seconds=audio_seconds,
                       first_frame_latency=latency, playout_delay=latency + buffer, max_lateness=float(late.max()), late_frames=int((late > 0).sum()),
                       realtime_factor=(ready[-1] - t0) / audio_seconds, idle_frames=0, seconds=t_end - t0)
    print(f"wrote {out}: {res.frames} frames at {res.fps} fps (audio {audio_seconds:.2f} s); first-frame latency "
          f"{latency * 1000:.0f} ms{f' (shown at {(latency + buffer) * 1000:.0f} ms)' if buffer else ''}, late frames {res.late_frames} (max {max(res.max_lateness, 0) * 1000:.0f} ms), "
          f"real-time factor {res.realtime_factor:.2f}, idle frames {res.idle_frames}")
    return res
