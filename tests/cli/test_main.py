import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import fada
from fada_cli.main import app
from tests.stages.generate_helpers import _isolated_cache, inputs, models  # noqa: F401

runner = CliRunner()


def run_cli(*args):
    """The real entry point in a subprocess: exit codes and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "fada_cli.main", *args], capture_output=True, text=True)


def test_help_lists_every_stage():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("curate", "train-teacher", "distill", "export", "generate", "eval", "demo", "recipes", "stream"):
        assert cmd in res.output


@pytest.mark.parametrize("cmd", ["curate", "train-teacher", "distill", "export", "generate", "eval", "demo", "stream"])
def test_every_command_has_real_help(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0
    assert len(res.output.strip().splitlines()) > 5


@pytest.mark.parametrize("cmd", ["demo", "generate", "app", "stream", "export", "curate", "eval", "synth"])
def test_flags_show_as_flags_in_help(cmd):
    """A boolean option takes no value: its help row names the flag, not a `<bool>` value."""
    res = runner.invoke(app, [cmd, "--help"], terminal_width=160)
    assert res.exit_code == 0 and "<bool>" not in res.output and "--help" in res.output
    if cmd == "demo":
        assert "--quick" in res.output and "--ablations" in res.output
    if cmd == "generate":
        assert "--no-crop" in res.output and "<path>" in res.output  # options that take a value still show its type


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and fada.__version__ in res.output


def test_recipes_lists_and_shows():
    res = runner.invoke(app, ["recipes"])
    assert res.exit_code == 0 and "tiny-fast" in res.output and "distill" in res.output
    res = runner.invoke(app, ["recipes", "tiny-teacher"])
    assert res.exit_code == 0 and "max_steps: 600" in res.output


def test_recipes_say_what_each_is_for():
    from fada.config import shipped_recipes

    res = runner.invoke(app, ["recipes"])
    rows = {line.split()[0]: line.split(None, 2) for line in res.output.splitlines() if line.strip()}
    assert res.exit_code == 0 and set(rows) == set(shipped_recipes())
    for name, stage in shipped_recipes().items():
        assert rows[name][1] == stage and len(rows[name]) == 3 and len(rows[name][2]) > 20, rows[name]
    assert "CPU-scale Fast student" in rows["tiny-fast"][2]


def test_unknown_recipe_is_one_line_exit_2():
    res = run_cli("train-teacher", "--recipe", "nope")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "recipe 'nope' not found" in res.stderr and "Traceback" not in res.stderr


def test_bad_override_is_one_line_exit_2():
    res = run_cli("distill", "--recipe", "tiny-fast.yaml", "bogus.key=1")
    assert res.returncode == 2
    assert res.stderr.strip() == "error: recipes/tiny-fast.yaml: bogus: unknown key (from override bogus.key=1)"


def test_missing_inputs_name_the_override_to_set(tmp_path):
    """A stage that reads another stage's output says which override names it, and where `fada demo` puts it."""
    res = runner.invoke(app, ["distill", "--recipe", "tiny-fast", "train.max_steps=5"])
    lines = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert res.exit_code == 2 and len(lines) == 2, res.output
    assert lines[0].startswith("error: data.manifest: not set — give data.manifest=FILE") and "B.jsonl" in lines[0]
    assert lines[1].startswith("error: distill.teacher: not set — give distill.teacher=DIR")
    assert "fada-demo/models/teacher" in lines[1] and "fada-demo/runs/teacher" in lines[1]
    res = runner.invoke(app, ["train-teacher", "--recipe", "tiny-teacher", "train.max_steps=5"])
    assert res.exit_code == 2 and "give data.manifest=FILE" in res.output and "fada-demo/curated/A.jsonl" in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "model")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output and "fada-demo/runs/" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["export", str(tmp_path / "empty"), "--out", str(tmp_path / "model")])
    assert res.exit_code == 2 and "neither a checkpoint" in res.output and "train.output_dir" in res.output


def test_debug_shows_traceback():
    res = run_cli("--debug", "train-teacher", "--recipe", "nope")
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_generate_without_inputs_is_a_user_error():
    res = runner.invoke(app, ["generate"])
    assert res.exit_code == 2


def test_a_stage_not_built_is_a_clear_user_error():
    from fada.errors import FadaError
    from fada_cli.main import run_stage

    with pytest.raises(FadaError, match="`fada no-such-stage` is not implemented yet"):
        run_stage("no_such_stage")


def test_progress_bars_draw_rarely_into_logs():
    """stderr not a terminal (a log file, Slurm, CI): a bar redraws every 10 s, not ten times a second; a
    TQDM_MININTERVAL the user set wins."""
    import os

    code = ("import fada_cli.main, time\n"
            "from tqdm.auto import tqdm\n"
            "for _ in tqdm(range(300)):\n    time.sleep(0.004)\n")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}
    logged = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)  # bytes: "\r" kept
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**env, "TQDM_MININTERVAL": "0"})
    assert logged.returncode == 0 and chosen.returncode == 0
    assert logged.stderr.count(b"\r") <= 3 < 50 < chosen.stderr.count(b"\r")


# -- `fada generate`: options that say what they do, checked before the model's weights load ------------------------


@pytest.fixture
def no_weights(monkeypatch):
    """Loading a model's weights fails the test: the checks below must come before it."""
    def load_net(*a, **k):
        raise AssertionError("the model's weights were loaded")

    monkeypatch.setattr("fada.pipeline.load_net", load_net)


def _help_text(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0
    return " ".join(res.output.replace("│", " ").split())  # rich's panel borders and wrapping removed


def _generate(inputs, model, *more):
    return runner.invoke(app, ["generate", str(inputs["portrait"]), str(inputs["short"]), "--model", str(model),
                               *map(str, more)])


def test_generate_help_says_what_the_options_do():
    text = _help_text("generate")
    for opt in ("--mode", "--steps", "--cfg-audio", "--cfg-ref"):
        assert f"{opt}" in text
    assert text.count("default: the model's own") >= 4
    assert "6.5" not in text and "2.5" not in text  # the demo models' scales are other numbers
    assert "centre square" in text and "as is" not in text  # --no-crop does not use the picture as it is
    assert "mono" in text and "model's audio rate" in text
    assert "model's resolution" in text and "--overwrite" in text


def test_generate_bad_mode_is_one_line_before_the_weights_load(models, inputs, tmp_path, no_weights):
    res = _generate(inputs, models["fast"], "--mode", "turbo", "-o", tmp_path / "o.mp4")
    assert res.exit_code == 2, res.output
    assert res.output.strip() == "error: --mode 'turbo': choose one of teacher, balanced, fast"


def test_generate_mode_the_folder_lacks_is_refused_from_its_config(models, inputs, tmp_path, no_weights):
    res = _generate(inputs, models["teacher"], "--mode", "fast", "-o", tmp_path / "o.mp4")
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0
    assert f"--mode fast: the teacher model at {models['teacher']} runs only teacher" in res.output
    lst = tmp_path / "list.jsonl"
    lst.write_text(json.dumps({"portrait": str(inputs["portrait"]), "audio": str(inputs["short"]),
                               "out": str(tmp_path / "b.mp4"), "mode": "balanced"}) + "\n")
    res = runner.invoke(app, ["generate", "--batch", str(lst), "--model", str(models["fast"])])
    assert res.exit_code == 2, res.output
    assert f"{lst}:1: --mode balanced: the fast model" in res.output and "runs only fast" in res.output
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "b.mp4").exists()


def test_generate_writes_only_mp4(models, inputs, tmp_path, no_weights):
    avi = tmp_path / "out.avi"
    res = _generate(inputs, models["fast"], "-o", avi)
    assert res.exit_code == 2, res.output
    assert res.output.strip() == f"error: {avi}: fada writes MP4 video; give the output a .mp4 name"
    lst = tmp_path / "list.jsonl"
    lst.write_text(json.dumps({"portrait": str(inputs["portrait"]), "audio": str(inputs["short"]),
                               "out": "clip.mkv"}) + "\n")
    res = runner.invoke(app, ["generate", "--batch", str(lst), "--model", str(models["fast"])])
    assert res.exit_code == 2 and f"{lst}:1: {tmp_path / 'clip.mkv'}: fada writes MP4 video" in res.output
    assert not avi.exists() and not (tmp_path / "clip.mkv").exists()


def test_generate_never_overwrites_silently(models, inputs, tmp_path, monkeypatch):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"the user's file")
    with monkeypatch.context() as m:
        m.setattr("fada.pipeline.load_net", lambda *a, **k: pytest.fail("the model's weights were loaded"))
        res = _generate(inputs, models["fast"], "-o", out)
        assert res.exit_code == 2, res.output
        assert res.output.strip() == f"error: {out}: already exists; pass --overwrite to replace it"
        assert out.read_bytes() == b"the user's file"
        # batch: a row without 'out' is named <portrait>_<audio>.mp4 beside the list; that one exists too
        lst = tmp_path / "list.jsonl"
        (tmp_path / "astronaut_short.mp4").write_bytes(b"mine too")
        lst.write_text(json.dumps({"portrait": str(inputs["portrait"]), "audio": str(inputs["short"])}) + "\n")
        res = runner.invoke(app, ["generate", "--batch", str(lst), "--model", str(models["fast"])])
        assert res.exit_code == 2, res.output
        assert f"{lst}:1: {tmp_path / 'astronaut_short.mp4'}: already exists; pass --overwrite" in res.output
        assert (tmp_path / "astronaut_short.mp4").read_bytes() == b"mine too"
        # two rows that resolve to one file
        row = {"portrait": str(inputs["portrait"]), "audio": str(inputs["short"]), "out": "same.mp4"}
        lst.write_text(json.dumps(row) + "\n" + json.dumps(dict(row, out=str(tmp_path / "same.mp4"))) + "\n")
        res = runner.invoke(app, ["generate", "--batch", str(lst), "--model", str(models["fast"])])
        assert res.exit_code == 2 and f"{lst}:2: output" in res.output and "also written by line 1" in res.output
    res = _generate(inputs, models["fast"], "-o", out, "--overwrite")
    assert res.exit_code == 0, res.output
    from fada.data.media import video_info

    assert video_info(out).frames > 0
