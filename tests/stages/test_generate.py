"""`fada generate`: mp4s read back (frames, fps, size, audio), portrait kinds, model resolution, batch, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage import data

from fada.data.media import read_audio_track, read_video, video_info, write_wav
from fada.errors import FadaError, MissingFileError
from fada.models.audio import frames_for_duration
from fada.stages import generate
from fada.utils.cache import record_demo_model

from .generate_helpers import FPS, SR, _isolated_cache, inputs, models, write_portrait, write_speech  # noqa: F401


def check_mp4(path, seconds, fps=FPS, size=32):
    info = video_info(path)
    want = frames_for_duration(int(round(seconds * SR)), SR, fps)
    frames, _ = read_video(path)
    assert len(frames) == want and info.frames == want
    assert info.fps == pytest.approx(fps) and (info.width, info.height) == (size, size)
    assert info.has_audio
    assert len(read_audio_track(path, SR)) / SR == pytest.approx(seconds, abs=0.1)
    return frames


def test_astronaut_fast_mp4(models, inputs, tmp_path, capsys):
    out = tmp_path / "talk.mp4"
    res = generate.run(inputs["portrait"], inputs["audio"], model=models["fast"], out=out, progress=False)
    frames = check_mp4(out, 3.3)
    assert res.path == out and res.frames == 82 and res.nfe_per_clip == 6 and res.clips == 11
    assert frames.std() > 1.0  # not a constant picture
    text = capsys.readouterr().out
    assert "NFE 6 per clip" in text and "from --model" in text and "PeRFlow 6 steps" in text


def test_teacher_and_balanced_modes(models, inputs, tmp_path, capsys):
    res = generate.run(inputs["portrait"], inputs["short"], model=models["teacher"], steps=3,
                       out=tmp_path / "t.mp4", progress=False)
    assert res.nfe_per_clip == 9 and res.plan.sampler == "ddim"
    check_mp4(tmp_path / "t.mp4", 0.5)
    res = generate.run(inputs["portrait"], inputs["short"], model=models["balanced"], out=tmp_path / "b.mp4",
                       cfg_audio=3.0, progress=False)
    assert res.nfe_per_clip == 18 and (res.plan.cfg_audio, res.plan.cfg_ref) == (3.0, 1.0)  # tiny-balanced default
    assert "NFE 9 per clip" in capsys.readouterr().out
    with pytest.raises(FadaError, match="--mode fast: the teacher model .* runs only teacher"):
        generate.run(inputs["portrait"], inputs["short"], model=models["teacher"], mode="fast",
                     out=tmp_path / "x.mp4", progress=False)
    with pytest.raises(FadaError, match="guidance twice"):
        generate.run(inputs["portrait"], inputs["short"], model=models["fast"], mode="balanced",
                     out=tmp_path / "x.mp4", progress=False)
    with pytest.raises(FadaError, match="--steps 3: PeRFlow needs at least one step per window"):
        generate.run(inputs["portrait"], inputs["short"], model=models["fast"], steps=3, out=tmp_path / "x.mp4",
                     progress=False)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("kind", ["rgba", "gray", "tiny", "huge", "no_crop_noise"])
def test_portrait_kinds(models, inputs, tmp_path, kind):
    import cv2

    a = data.astronaut()
    img = {"rgba": lambda: np.dstack([a, np.full(a.shape[:2], 200, np.uint8)]),
           "gray": lambda: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY),
           "tiny": lambda: cv2.resize(a, (72, 72), interpolation=cv2.INTER_AREA),
           "huge": lambda: cv2.resize(a, (3000, 2600), interpolation=cv2.INTER_LINEAR),
           "no_crop_noise": lambda: np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)}[kind]()
    ext = ".jpg" if kind == "huge" else ".webp" if kind == "gray" else ".png"
    p = write_portrait(tmp_path / f"p{ext}", img)
    out = tmp_path / "o.mp4"
    generate.run(p, inputs["short"], model=models["fast"], out=out, no_crop=kind == "no_crop_noise", progress=False)
    check_mp4(out, 0.5)


def test_other_fps_keeps_the_count_rule(models, inputs, tmp_path):
    out = tmp_path / "o30.mp4"
    res = generate.run(inputs["portrait"], inputs["short"], model=models["fast"], out=out, fps=30, progress=False)
    assert res.fps == 30
    check_mp4(out, 0.5, fps=30)


def test_default_fps_is_the_models_own(inputs, tmp_path):
    """One default output rate everywhere: the CLI, the library and the app use the model's fps (here 20)."""
    from fada.stages import export

    from .generate_helpers import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "run", "fast", extra=("model.fps=20",))
    model = export.run(ckpt, tmp_path / "m20")
    from typer.testing import CliRunner

    from fada_cli.main import app

    out = tmp_path / "o20.mp4"
    r = CliRunner().invoke(app, ["generate", str(inputs["portrait"]), str(inputs["short"]), "--model", str(model),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    check_mp4(out, 0.5, fps=20)


def test_model_resolution_order(models, inputs, tmp_path, monkeypatch, capsys):
    with pytest.raises(FadaError, match="no model: pass --model DIR .* run `fada demo`"):
        generate.run(inputs["portrait"], inputs["short"], out=tmp_path / "o.mp4", progress=False)
    record_demo_model(models["fast"])
    generate.run(inputs["portrait"], inputs["short"], out=tmp_path / "o.mp4", progress=False)
    assert "the Fast model of the last `fada demo` run" in capsys.readouterr().out
    monkeypatch.setenv("FADA_MODEL", str(models["balanced"]))
    res = generate.run(inputs["portrait"], inputs["short"], out=tmp_path / "o.mp4", progress=False, overwrite=True)
    assert res.plan.mode == "balanced" and "from $FADA_MODEL" in capsys.readouterr().out


def test_batch(models, inputs, tmp_path, capsys):
    d = inputs["dir"]
    lst = d / "list.jsonl"
    lst.write_text("\n".join(json.dumps(r) for r in [
        {"portrait": "astronaut.png", "audio": "short.wav"},
        {"portrait": str(inputs["portrait"]), "audio": "short.wav", "out": str(tmp_path / "two.mp4"), "seed": 3},
    ]) + "\n")
    res = generate.run(None, None, model=models["fast"], batch=lst, out=tmp_path / "videos", progress=False)
    assert [r.path for r in res] == [tmp_path / "videos" / "astronaut_short.mp4", tmp_path / "two.mp4"]
    a, b = read_video(res[0].path)[0], read_video(res[1].path)[0]
    assert a.shape == b.shape and not np.array_equal(a, b)  # different seeds
    assert capsys.readouterr().out.count("model: ") == 1  # loaded once
    lst.write_text('{"portrait": "astronaut.png", "audio": "missing.wav"}\n')
    with pytest.raises(FadaError, match=r"list.jsonl:1: audio file not found"):
        generate.run(None, None, model=models["fast"], batch=lst, progress=False)


def test_input_errors(models, inputs, tmp_path):
    kw = dict(model=models["fast"], out=tmp_path / "o.mp4", progress=False)
    with pytest.raises(MissingFileError, match="portrait image not found"):
        generate.run(tmp_path / "nope.png", inputs["short"], **kw)
    with pytest.raises(MissingFileError, match="audio file not found"):
        generate.run(inputs["portrait"], tmp_path / "nope.wav", **kw)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x01garbage" * 10)
    with pytest.raises(FadaError, match="cannot read audio file"):
        generate.run(inputs["portrait"], bad, **kw)
    notimg = tmp_path / "img.png"
    notimg.write_text("not an image")
    with pytest.raises(FadaError, match="cannot be read as an image"):
        generate.run(notimg, inputs["short"], **kw)
    short = write_wav(tmp_path / "blip.wav", np.zeros(100, np.float32), SR)
    with pytest.raises(FadaError, match="shorter than one video frame"):
        generate.run(inputs["portrait"], short, **kw)
    with pytest.raises(FadaError, match="training checkpoint"):
        generate.run(inputs["portrait"], inputs["short"], model=models["fast"].parent / "run-fast" / "step-0000010",
                     out=tmp_path / "o.mp4", progress=False)
    assert not (tmp_path / "o.mp4").exists()


def test_silence_is_valid(models, inputs, tmp_path):
    silent = write_wav(tmp_path / "silence.flac", np.zeros(int(0.4 * SR), np.float32), SR)
    generate.run(inputs["portrait"], silent, model=models["fast"], out=tmp_path / "o.mp4", progress=False)
    check_mp4(tmp_path / "o.mp4", 0.4)


def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fada_cli.main", "generate", *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_cli_errors_are_one_line_exit_2(models, inputs, tmp_path):
    noise = write_portrait(tmp_path / "noise.png", np.full((120, 120, 3), 128, np.uint8))
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.float32), SR)
    for args, msg in (((noise, inputs["short"]), "no face found in the portrait; pass --no-crop"),
                      ((inputs["portrait"], empty), "is empty")):
        res = _cli(*args, "--model", models["fast"], "--out", tmp_path / "o.mp4")
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().count("\n") == 0 and msg in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_cli_generate_with_a_taesd_decoder(inputs, tmp_path):
    """`fada generate --decoder taesd:PATH` on an SD-VAE model folder: the tiny decoder is used and said, the mp4 has
    the frame count of the audio; a malformed --decoder is one line, exit 2, before the model loads."""
    from typer.testing import CliRunner

    from fada_cli.main import app
    from tests.fixtures import tiny_taesd

    from .generate_helpers import export_sd_model

    model, taesd = export_sd_model(tmp_path), tiny_taesd(tmp_path / "taesd")

    def cli(out, *more):
        return CliRunner().invoke(app, ["generate", str(inputs["portrait"]), str(inputs["short"]), "--model",
                                        str(model), "--out", str(out), *more])

    res = cli(tmp_path / "t.mp4", "--decoder", f"taesd:{taesd}")
    assert res.exit_code == 0, res.output
    assert "decoder taesd(x8, 4ch)" in res.output and "NFE 6 per clip" in res.output
    frames = check_mp4(tmp_path / "t.mp4", 0.5)
    res = cli(tmp_path / "sd.mp4")  # the folder's default: the SD VAE
    assert res.exit_code == 0, res.output
    assert "decoder sd-vae(x8, 4ch)" in res.output
    assert not np.array_equal(frames, check_mp4(tmp_path / "sd.mp4", 0.5))  # another decoder, other pixels
    res = cli(tmp_path / "x.mp4", "--decoder", "taesd")
    assert res.exit_code == 2 and "has no TAESD copy" in res.output
    res = cli(tmp_path / "x.mp4", "--decoder", "vae")
    assert res.exit_code == 2 and "--decoder 'vae': choose sd" in res.output
    assert res.output.strip().count("\n") == 0 and not (tmp_path / "x.mp4").exists()


def test_cli_generate_compiled(inputs, tmp_path):
    """`fada generate --compile`: the graphs are built on a warm-up clip whose time is reported apart; the video
    is written with the audio's frame count."""
    from typer.testing import CliRunner

    from fada_cli.main import app
    from tests.fixtures import tiny_taesd

    from .generate_helpers import export_sd_model

    model, taesd = export_sd_model(tmp_path), tiny_taesd(tmp_path / "taesd")
    res = CliRunner().invoke(app, ["generate", str(inputs["portrait"]), str(inputs["short"]), "--model", str(model),
                                   "--out", str(tmp_path / "c.mp4"), "--decoder", f"taesd:{taesd}", "--compile"])
    assert res.exit_code == 0, res.output
    assert "compiled (default) and warmed up in" in res.output and "not counted" in res.output
    check_mp4(tmp_path / "c.mp4", 0.5)
