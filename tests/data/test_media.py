"""Video/audio I/O: mp4 (H.264 + AAC) round trips, probing, streaming, atomic writes, and clear errors."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fada.data import media
from fada.errors import FadaError

SR = 16000


def smooth_frames(n, h=96, w=128):
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = 60 + 120 * xx / w
        out[i, ..., 1] = 50 + 100 * yy / h
        out[i, ..., 2] = 40 + 2 * i
    return out


def speechy(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)
    return (0.4 * env * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def test_mp4_round_trip_with_audio(tmp_path):
    frames, audio = smooth_frames(50), speechy(2.0)
    path = media.write_video(tmp_path / "a.mp4", frames, 25, audio=audio)
    info = media.video_info(path)
    assert (info.frames, info.fps, info.width, info.height, info.has_audio) == (50, 25.0, 128, 96, True)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    back, fps = media.read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8 and fps == pytest.approx(25.0)
    assert np.abs(back.astype(int) - frames).mean() < 3.0
    got = media.read_audio_track(path, SR)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - len(audio)) / SR < 0.07  # within one AAC frame
    n = min(len(got), len(audio))
    assert np.corrcoef(got[:n], audio[:n])[0, 1] > 0.95
    got8k = media.read_audio_track(path, 8000)  # resampled by PyAV
    assert abs(len(got8k) / 8000 - 2.0) < 0.07


def test_iter_video_chunks_matches_read_video(tmp_path):
    path = media.write_video(tmp_path / "c.mp4", smooth_frames(23, 64, 64), 25)
    whole, _ = media.read_video(path)
    chunks = list(media.iter_video_chunks(path, chunk=10))
    assert [len(c) for c in chunks] == [10, 10, 3]
    assert np.array_equal(np.concatenate(chunks), whole)


def test_streaming_writer_many_frames_and_atomic(tmp_path):
    target = tmp_path / "long.mp4"
    frame = smooth_frames(1, 64, 64)[0]
    with media.VideoWriter(target, 25, (64, 64), audio=speechy(24.0), crf=30, preset="ultrafast") as w:
        for i in range(600):
            w.write(frame)
        assert not target.exists()  # appears only when closed
    info = media.video_info(target)
    assert info.frames == 600 and info.has_audio
    assert abs(len(media.read_audio_track(target)) / SR - 24.0) < 0.07


def test_writer_error_leaves_nothing(tmp_path):
    target = tmp_path / "bad.mp4"
    with pytest.raises(ValueError):
        with media.VideoWriter(target, 25, (64, 64)) as w:
            w.write(smooth_frames(2, 64, 64))
            w.write(np.zeros((32, 32, 3), np.uint8))  # wrong size
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_a_clear_error(tmp_path):
    with pytest.raises(FadaError, match="even"):
        media.VideoWriter(tmp_path / "odd.mp4", 25, (65, 64))


def test_corrupt_file_is_a_fada_error_naming_it(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    for fn in (media.read_video, media.video_info, media.read_audio_track):
        with pytest.raises(FadaError, match="corrupt.mp4"):
            fn(bad)
    with pytest.raises(FadaError, match="corrupt.mp4"):
        next(media.iter_video_chunks(bad))


def test_opencv_reads_pngs_after_decord_was_loaded(tmp_path):
    """decord loads its libraries RTLD_GLOBAL with a bundled zlib 1.2.3; OpenCV loaded after it used to bind
    libpng's zlib calls half to that copy and fail every PNG ("libpng error: bad parameters to zlib").
    A fresh interpreter, because import order is the point (cv2 may already be loaded in this one)."""
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"nothing here")
    png = tmp_path / "p.png"
    code = textwrap.dedent(f"""
        import numpy as np
        from fada.data import media
        from fada.errors import FadaError
        try:
            media.read_video({str(bad)!r})  # loads decord, then fails on the file
        except FadaError:
            pass
        import cv2
        from fada.data.portrait import read_portrait
        assert cv2.imwrite({str(png)!r}, np.full((8, 8, 3), 200, np.uint8))
        assert read_portrait({str(png)!r}).shape == (8, 8, 3)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_missing_file_and_no_audio_track(tmp_path):
    with pytest.raises(FadaError, match="nope.mp4"):
        media.read_video(tmp_path / "nope.mp4")
    silent = media.write_video(tmp_path / "silent.mp4", smooth_frames(10, 64, 64), 25)
    assert media.video_info(silent).has_audio is False
    with pytest.raises(FadaError, match=r"silent.mp4: no audio track"):
        media.read_audio_track(silent)


def test_write_wav_and_read_audio(tmp_path):
    audio = speechy(1.0)
    path = media.write_wav(tmp_path / "s.wav", audio, SR)
    back = media.read_audio(path, SR)
    assert len(back) == len(audio) and np.abs(back - audio).max() < 1e-3
    half = media.read_audio(path, 8000)
    assert abs(len(half) - 8000) <= 2
    assert [p.name for p in tmp_path.iterdir()] == ["s.wav"]


def test_streamed_audio_in_chunks_and_fragmented_mp4(tmp_path):
    import av

    target = tmp_path / "live.mp4"
    frames, audio = smooth_frames(75, 64, 64), speechy(3.0)
    with media.VideoWriter(target, 25, (64, 64), audio_stream=True, fragmented=True, preset="ultrafast") as w:
        for i, f in enumerate(frames):  # audio as a live source gives it: uneven chunks, after each frame
            w.write(f)
            w.write_audio(audio[i * 640:(i + 1) * 640][:333])
            w.write_audio(audio[i * 640:(i + 1) * 640][333:])
            if i == 60:  # playable while written: the temp file already holds decodable fragments
                (tmp,) = [p for p in tmp_path.iterdir() if p != target]
                with av.open(str(tmp)) as c:
                    assert sum(1 for _ in c.decode(video=0)) >= 10
        assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["live.mp4"]
    back, fps = media.read_video(target)
    assert back.shape == frames.shape and fps == pytest.approx(25.0)  # decord: frames / duration
    assert np.abs(back.astype(int) - frames).mean() < 3.0
    with av.open(str(target)) as c:
        assert c.streams.audio and c.streams.video
    got = media.read_audio_track(target, SR)  # the edit list (delay_moov) trims the AAC priming
    assert abs(len(got) / SR - 3.0) < 0.07
    n = min(len(got), len(audio))
    assert np.corrcoef(got[:n], audio[:n])[0, 1] > 0.95
    info = media.video_info(target)
    assert info.frames == 75 and info.fps == pytest.approx(25.0) and info.has_audio
    assert info.duration == pytest.approx(3.0, abs=1e-3)


def _burst(seconds, at):
    """Silence with a 10 ms 1 kHz burst starting (at sine phase 0) at ``at`` seconds."""
    a = np.zeros(int(seconds * SR), np.float32)
    i = int(round(at * SR))
    a[i:i + 160] = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(160) / SR)
    return a


def _onsets(path):
    """(frame times, burst onset in s on the container's timeline, burst onset in s by sample index from
    read_audio_track) -- the latter is how the project pairs audio with frames (sample i <-> frame i * fps / SR)."""
    import av

    with av.open(str(path)) as c:
        times = np.array([f.time for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        chunks, t0 = [], None
        for f in c.decode(audio=0):
            t0 = f.time if t0 is None else t0
            chunks.append(f.to_ndarray().mean(axis=0))
    x = np.concatenate(chunks) if chunks else np.zeros(1)
    on_pts = None if t0 is None or not (np.abs(x) > 0.1).any() else t0 + np.argmax(np.abs(x) > 0.1) / SR
    y = media.read_audio_track(path, SR) if chunks else np.zeros(1)
    return times, on_pts, np.argmax(np.abs(y) > 0.1) / SR


@pytest.mark.parametrize("mode", ["up_front", "streamed", "streamed_fragmented"])
def test_audio_onset_lands_on_the_video_timeline(tmp_path, mode):
    # the AAC encoder emits 1024 samples (64 ms at 16 kHz) of priming first; every writer path must trim them (an
    # mp4 edit list) so that a burst written at 1.000 s plays at 1.000 s, with frame k at k / fps
    import av

    fps, at, n = 25, 1.0, 100
    audio, target = _burst(n / fps, at), tmp_path / f"{mode}.mp4"
    frame = smooth_frames(1, 64, 64)[0]
    opts = dict(audio=audio) if mode == "up_front" else dict(audio_stream=True, fragmented=mode.endswith("fragmented"))
    with media.VideoWriter(target, fps, (64, 64), preset="ultrafast", **opts) as w:
        for i in range(n):
            w.write(frame)
            if mode != "up_front":
                w.write_audio(audio[i * SR // fps:(i + 1) * SR // fps])
            if i == 74 and mode == "streamed_fragmented":  # the growing file is already in sync
                (tmp,) = [p for p in tmp_path.iterdir() if p != target]
                times, on_pts, on_idx = _onsets(tmp)
                assert abs(on_pts - at) < 2e-3 and abs(on_idx - at) < 2e-3, (on_pts, on_idx)
                assert len(times) >= 25 and np.abs(times - np.arange(len(times)) / fps).max() < 1e-3
    times, on_pts, on_idx = _onsets(target)
    assert len(times) == n and np.abs(times - np.arange(n) / fps).max() < 1e-3  # no stretched first frame
    assert abs(on_pts - at) < 2e-3, f"onset {1000 * (on_pts - at):+.2f} ms on the container timeline"
    assert abs(on_idx - at) < 2e-3, f"onset {1000 * (on_idx - at):+.2f} ms by sample index"
    info = media.video_info(target)
    assert info.fps == pytest.approx(fps) and info.frames == n and info.duration == pytest.approx(n / fps, abs=1e-3)
    with av.open(str(target)) as c:
        assert c.streams.audio and c.streams.video


def test_streamed_audio_needs_the_flag(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        media.VideoWriter(tmp_path / "x.mp4", 25, (64, 64), audio=speechy(0.1), audio_stream=True)
    with media.VideoWriter(tmp_path / "y.mp4", 25, (64, 64)) as w:
        with pytest.raises(RuntimeError, match="audio_stream=True"):
            w.write_audio(speechy(0.1))
        w.write(smooth_frames(1, 64, 64))
