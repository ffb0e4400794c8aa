"""Video and audio file I/O: decoding (decord, PyAV), probing, and streamed H.264 + AAC mp4 writing.

Frames are uint8 RGB arrays shaped (T, H, W, 3); audio is float32 mono in [-1, 1].
Every problem with a user's file is a one-line ``FadaError`` that names the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from fada.errors import FadaError, MissingFileError
from fada.utils.io import atomic_path

AAC_FRAME = 1024  # samples per AAC frame


@dataclass(frozen=True)
class VideoInfo:
    """What a container holds, from probing its headers (no full decode)."""

    frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    duration: float  # seconds (video stream; the container's when the stream does not say)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_exists(path: Path, what: str = "video") -> None:
    if not path.exists():
        raise MissingFileError(path, what)
    if path.is_dir():
        raise FadaError(f"{path}: is a folder, expected a {what} file")


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise FadaError(f"{path}: cannot be read as media ({_short(e)})") from None


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__


# ----------------------------------------------------------------------------------------------- probing


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Probe a video file: frame count, fps, size, whether it has audio, and duration in seconds."""
    path = Path(path)
    _check_exists(path)
    with contextlib.closing(_open(path)) as container:
        if not container.streams.video:
            raise FadaError(f"{path}: no video stream")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        width, height = vs.codec_context.width, vs.codec_context.height
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        frames = int(vs.frames or 0)
        if frames <= 0 and fps > 0:
            frames = int(round(duration * fps))
        if fps <= 0 or width <= 0 or height <= 0:
            raise FadaError(f"{path}: video stream has no usable frame rate or size")
        return VideoInfo(frames=frames, fps=fps, width=width, height=height,
                         has_audio=bool(container.streams.audio), duration=duration)


# ----------------------------------------------------------------------------------------------- video reading


def _import_decord():
    """``import decord`` without letting its bundled zlib 1.2.3 take over every library loaded after it.

    decord loads libdecord.so with ``ctypes.RTLD_GLOBAL``, which puts its whole dependency tree into the
    process's global symbol scope, decord.libs/libz-*.so.1.2.3 included. Libraries loaded later that need
    libz.so.1 (OpenCV and its libpng, PyAV's ffmpeg, Pillow) then bind their unversioned zlib calls (inflate,
    inflateInit2_, ...) to that 1.2.3 copy but ``inflateReset2@ZLIB_1.2.3.4``, which 1.2.3 lacks, to the
    system zlib: libpng mixes two zlibs on one stream and ``cv2.imdecode`` of any PNG fails ("libpng error:
    bad parameters to zlib"). Putting the system zlib into the global scope first makes every later lookup,
    decord's own ffmpeg's included (zlib 1.2.x is backward compatible), find that one.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libz.so.1", mode=ctypes.RTLD_GLOBAL)
    import decord

    return decord


def _reader(path: Path):
    decord = _import_decord()

    _check_exists(path)
    decord.bridge.set_bridge("native")
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises DECORDError (a RuntimeError) for corrupt or non-video files
        raise FadaError(f"{path}: cannot be decoded as video ({_short(e)})") from None
    if len(vr) == 0:
        raise FadaError(f"{path}: video has no frames")
    return vr


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame: (uint8 array (T, H, W, 3) RGB, fps). Use ``iter_video_chunks`` for long videos."""
    path = Path(path)
    vr = _reader(path)
    try:
        frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    except Exception as e:
        raise FadaError(f"{path}: decoding failed ({_short(e)})") from None
    return frames, float(vr.get_avg_fps())


def iter_video_chunks(path: str | os.PathLike, chunk: int = 64) -> Iterator[np.ndarray]:
    """Yield consecutive uint8 RGB chunks (n <= chunk, H, W, 3) of the video; memory stays bounded by ``chunk``."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    path = Path(path)
    vr = _reader(path)
    for start in range(0, len(vr), chunk):
        idx = list(range(start, min(start + chunk, len(vr))))
        try:
            yield vr.get_batch(idx).asnumpy()
        except Exception as e:
            raise FadaError(f"{path}: decoding failed at frame {start} ({_short(e)})") from None


# ----------------------------------------------------------------------------------------------- audio reading


def read_audio_track(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of a video or audio file as float32 mono at ``sample_rate``.

    Channels are averaged; resampling is PyAV's (libswresample). A file without audio is a FadaError.
    """
    import av

    path = Path(path)
    _check_exists(path, "media")
    chunks: list[np.ndarray] = []
    with contextlib.closing(_open(path)) as container:
        if not container.streams.audio:
            raise FadaError(f"{path}: no audio track")
        stream = container.streams.audio[0]
        declared = None  # the stream's own length (the mp4 edit list): decoders pad the last AAC frame past it
        if stream.duration is not None and stream.time_base is not None:
            declared = int(round(float(stream.duration * stream.time_base) * sample_rate))
        resampler = None
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    layout = frame.layout.name
                    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as e:
            raise FadaError(f"{path}: audio decoding failed ({_short(e)})") from None
    if not chunks:
        raise FadaError(f"{path}: audio track is empty")
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if declared and 0 < declared < len(audio):
        audio = audio[:declared]
    return audio


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file (wav/flac/ogg via soundfile + polyphase resampling, anything else via PyAV) as float32
    mono at ``sample_rate``."""
    path = Path(path)
    _check_exists(path, "audio")
    if path.suffix.lower() in (".wav", ".flac", ".ogg"):
        import soundfile as sf

        try:
            audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:
            raise FadaError(f"{path}: cannot be read as audio ({_short(e)})") from None
        audio = audio.mean(axis=1)
        if sr != sample_rate:
            from math import gcd

            from scipy.signal import resample_poly

            g = gcd(int(sr), int(sample_rate))
            audio = resample_poly(audio, int(sample_rate) // g, int(sr) // g)
        return np.asarray(audio, dtype=np.float32)
    return read_audio_track(path, sample_rate)


# ----------------------------------------------------------------------------------------------- writing


def _as_mono_float(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 2:  # (n, channels)
        a = a.mean(axis=1) if a.shape[1] <= 8 else a.mean(axis=0)
    if a.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono) or (samples, channels), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    return np.clip(a.astype(np.float32, copy=False), -1.0, 1.0)


class VideoWriter:
    """Streamed H.264 (libx264, yuv420p) mp4 writer with an optional AAC track; atomic on close.

    ``size`` is (width, height) and must be even. Frames (uint8 RGB, (H, W, 3) or a (n, H, W, 3) chunk) go in
    through ``write``; memory stays flat however many are written. ``audio`` (float mono at ``sample_rate``) is
    given up front and interleaved with the video as it is written. The file appears at ``path`` only when the
    writer closes without error; on error nothing is left behind.

    ``threads=0`` lets x264 choose; pass 1 for output that is identical across machines.

    ``audio_stream=True`` (with ``audio=None``): the audio track comes as it is produced, through ``write_audio``;
    AAC frames are muxed as soon as they are full, so a live source needs no whole-file buffer. ``fragmented=True``
    writes a fragmented MP4 (a sample-less moov with the first fragment, then a moof+mdat per video keyframe or per
    second at most), so the temp file is playable while it is written; the final path still appears only at close.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], audio: np.ndarray | None = None,
                 sample_rate: int = 16000, crf: int = 18, preset: str = "medium", threads: int = 0,
                 audio_bitrate: int = 96_000, audio_stream: bool = False, fragmented: bool = False):
        self.path = Path(path)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise FadaError(f"{self.path}: frame size {self.width}x{self.height} must be positive and even for H.264")
        if fps <= 0:
            raise FadaError(f"{self.path}: fps must be positive, got {fps}")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.sample_rate = int(sample_rate)
        if audio is not None and audio_stream:
            raise ValueError("give the audio up front (audio=) or stream it (audio_stream=True), not both")
        self.audio = None if audio is None else _as_mono_float(audio)
        self.audio_stream, self.fragmented = bool(audio_stream), bool(fragmented)
        self._pending = np.zeros(0, np.float32)  # streamed samples not yet a whole AAC frame
        self.crf, self.preset, self.threads, self.audio_bitrate = crf, preset, threads, audio_bitrate
        self.frames_written = 0
        self._audio_pos = 0
        self._container = None
        self._atomic = None

    # context manager -------------------------------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        import av

        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            # frag_duration as well as frag_keyframe: x264's keyframes can be 10 s apart, and a reader of the growing
            # file should see new data at least every second (fragments need not start on a keyframe); flush_packets:
            # each fragment reaches the file when it is cut, not when the 32 KB I/O buffer fills.
            # delay_moov: the AAC encoder's first packet is 1024 samples of priming (pts -1024). With a plain
            # empty_moov, ffmpeg's mov muxer writes no edit list (the moov goes out before any packet) and shifts the
            # tracks to start at 0 instead: the priming is played, the audio lands 1024 samples late against frame
            # index / fps, and the first video sample is stretched by as much (frames from 1 on sit 64 ms late, and
            # the probed fps reads frames / (duration + 64 ms)). delay_moov holds the moov back until the first
            # fragment is cut (once every track has a packet), so it carries an edit list that trims the priming, as
            # the non-fragmented file does (ffmpeg's HLS muxer sets the same flag for its fMP4 segments).
            opts = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof", "frag_duration": "1000000",
                    "flush_packets": "1"} if self.fragmented else {}
            self._container = av.open(str(tmp), mode="w", format="mp4", options=opts)
            vs = self._container.add_stream("libx264", rate=self.fps)
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, "yuv420p"
            vs.options = {"crf": str(self.crf), "preset": self.preset}
            vs.codec_context.thread_count = self.threads
            self._vstream = vs
            self._astream = None
            if self.audio is not None or self.audio_stream:
                self._astream = self._container.add_stream("aac", rate=self.sample_rate, layout="mono")
                self._astream.bit_rate = self.audio_bitrate
        except Exception:
            self.abort()
            raise

    def write(self, frames: np.ndarray) -> None:
        """Append one frame (H, W, 3) or a chunk (n, H, W, 3) of uint8 RGB frames."""
        import av

        if self._container is None:
            raise RuntimeError("VideoWriter is not open (use it as a context manager)")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected frames shaped (n, {self.height}, {self.width}, 3), got {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {frames.dtype}")
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = self.frames_written
            self._container.mux(self._vstream.encode(vf))
            self.frames_written += 1
            self._write_audio_until(float(self.frames_written / self.fps))

    def write_audio(self, samples: np.ndarray) -> None:
        """Append float mono samples (at ``sample_rate``) to a streamed audio track (``audio_stream=True``); whole
        AAC frames are encoded and muxed now (the muxer interleaves them with the video), the rest at the next call
        or at close."""
        if self._container is None:
            raise RuntimeError("VideoWriter is not open (use it as a context manager)")
        if not self.audio_stream:
            raise RuntimeError("write_audio needs VideoWriter(..., audio_stream=True)")
        x = _as_mono_float(samples)
        self._pending = np.concatenate([self._pending, x]) if self._pending.size else x.copy()
        n = self._pending.size // AAC_FRAME * AAC_FRAME
        for i in range(0, n, AAC_FRAME):
            self._encode_audio(self._pending[i:i + AAC_FRAME])
        self._pending = self._pending[n:].copy()

    def _encode_audio(self, chunk: np.ndarray) -> None:
        import av

        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk[None]), format="fltp", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self._audio_pos
        af.time_base = Fraction(1, self.sample_rate)
        self._container.mux(self._astream.encode(af))
        self._audio_pos += len(chunk)

    def _write_audio_until(self, seconds: float | None) -> None:
        if self._astream is None:
            return
        if self.audio_stream:  # streamed: only the last partial frame is left, at close
            if seconds is None and self._pending.size:
                self._encode_audio(self._pending)
                self._pending = np.zeros(0, np.float32)
            return
        end = len(self.audio) if seconds is None else min(len(self.audio), int(round(seconds * self.sample_rate)))
        while self._audio_pos < end and (seconds is None or end - self._audio_pos >= AAC_FRAME):
            self._encode_audio(self.audio[self._audio_pos:self._audio_pos + AAC_FRAME])

    def close(self) -> None:
        """Flush the encoders, finish the file and move it into place."""
        if self._container is None:
            return
        try:
            self._write_audio_until(None)
            self._container.mux(self._vstream.encode(None))
            if self._astream is not None:
                self._container.mux(self._astream.encode(None))
            self._container.close()
            self._container = None
        except Exception:
            self.abort()
            raise
        atomic, self._atomic = self._atomic, None
        atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the partial file (nothing appears at ``path``)."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._atomic is not None:
            atomic, self._atomic = self._atomic, None
            err = RuntimeError("aborted")
            with contextlib.suppress(RuntimeError):  # the temp file is removed by atomic_path's ``finally``
                atomic.__exit__(RuntimeError, err, None)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16000, **kwargs) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) (with optional mono audio) as an H.264/AAC mp4, atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames shaped (T, H, W, 3), got {frames.shape}")
    with VideoWriter(path, fps, (frames.shape[2], frames.shape[1]), audio=audio, sample_rate=sample_rate,
                     **kwargs) as w:
        w.write(frames)
    return Path(path)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = 16000) -> Path:
    """Write mono float audio as 16-bit PCM wav, atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), _as_mono_float(audio), int(sr), subtype="PCM_16", format="WAV")
    return Path(path)
