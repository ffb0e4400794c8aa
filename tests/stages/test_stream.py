"""`fada stream`: a session driven from a file or stdin PCM into a fragmented mp4, the same frames as `fada generate`,
pacing, timings, and one-line errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from typer.testing import CliRunner

from fada.data.media import read_audio_track, read_video, video_info
from fada.models.audio import frames_for_duration
from fada_cli.main import app

from .generate_helpers import SR, _isolated_cache, inputs, models, speech  # noqa: F401


def _run(args, **kw):
    return CliRunner().invoke(app, ["stream", *map(str, args)], **kw)


def test_stream_file_equals_generate(models, inputs, tmp_path):
    out = tmp_path / "s.mp4"
    r = _run([inputs["portrait"], inputs["audio"], "-m", models["fast"], "-o", out, "--no-pace", "--seed", 3])
    assert r.exit_code == 0, r.output
    assert "first-frame latency" in r.output and "real-time factor" in r.output
    want = frames_for_duration(int(round(3.3 * SR)), SR, 25)
    frames, _ = read_video(out)
    assert len(frames) == want and video_info(out).has_audio
    assert len(read_audio_track(out, SR)) / SR >= 3.2
    ref = tmp_path / "g.mp4"
    r = CliRunner().invoke(app, ["generate", str(inputs["portrait"]), str(inputs["audio"]), "-m",
                                 str(models["fast"]), "-o", str(ref), "--seed", "3"])
    assert r.exit_code == 0, r.output
    offline, _ = read_video(ref)
    assert offline.shape == frames.shape
    assert np.abs(offline.astype(int) - frames.astype(int)).max() <= 2  # same frames in, same H.264 settings


def test_stream_stdin_pcm_stereo_48k(models, inputs, tmp_path):
    import soxr

    x = soxr.resample(speech(1.0), SR, 48000)
    pcm = (np.clip(np.stack([x, x], 1), -1, 1) * 32767).astype("<i2").tobytes()
    out = tmp_path / "in.mp4"
    r = _run([inputs["portrait"], "-", "-m", models["fast"], "-o", out, "--no-pace", "--sample-rate", 48000,
              "--channels", 2], input=pcm)
    assert r.exit_code == 0, r.output
    assert len(read_video(out)[0]) == frames_for_duration(48000, 48000, 25)


def test_paced_run_takes_real_time(models, inputs, tmp_path):
    from fada.stages import stream

    t = time.perf_counter()
    res = stream.run(inputs["portrait"], inputs["short"], model=models["fast"], out=tmp_path / "p.mp4",
                     buffer_ms=300)
    assert time.perf_counter() - t >= 0.4 and res.seconds >= 0.4
    assert res.playout_delay == res.first_frame_latency + 0.3  # the player starts after the jitter buffer
    assert res.frames == frames_for_duration(int(0.5 * SR), SR, 25) and res.idle_frames == 0
    assert res.first_frame_latency > 0 and res.realtime_factor > 0.8


def test_bad_inputs_are_one_line_errors(models, inputs, tmp_path):
    cases = [([inputs["portrait"], tmp_path / "nope.wav"], None, "nope.wav"),
             ([inputs["portrait"], "-", "--channels", 0], b"\0\0", "--channels 0"),
             ([inputs["portrait"], "-"], b"", "stdin: no audio"),
             ([inputs["portrait"], "-", "--channels", 2], b"\0\0\0\0\0\0", "trailing byte"),
             ([inputs["portrait"], inputs["short"], "--buffer-ms", -5], None, "--buffer-ms -5")]
    for args, data, msg in cases:
        out = tmp_path / "x.mp4"
        r = _run([*args, "-m", models["fast"], "-o", out, "--no-pace"], input=data)
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and msg in lines[0], r.output
        assert not out.exists()


def test_output_must_be_a_new_mp4(models, inputs, tmp_path, monkeypatch):
    """An existing output is replaced only with --overwrite, and the output is an .mp4: both before the model's
    weights load."""
    monkeypatch.setattr("fada.pipeline.load_net", lambda *a, **k: pytest.fail("the model's weights were loaded"))
    out = tmp_path / "s.mp4"
    out.write_bytes(b"the user's file")
    for o, msg in ((out, f"error: {out}: already exists; pass --overwrite to replace it"),
                   (tmp_path / "s.mov", f"error: {tmp_path / 's.mov'}: fada writes MP4 video")):
        r = _run([inputs["portrait"], inputs["short"], "-m", models["fast"], "-o", o, "--no-pace"])
        assert r.exit_code == 2, r.output
        assert r.output.strip().count("\n") == 0 and r.output.startswith(msg)
    assert out.read_bytes() == b"the user's file" and not (tmp_path / "s.mov").exists()
