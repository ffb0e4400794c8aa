import subprocess
import sys

import pytest
from typer.testing import CliRunner

import fada
from fada_cli.main import app

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
