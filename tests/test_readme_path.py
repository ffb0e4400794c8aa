"""The README's newcomer path, run as written: the bash block after ``<!-- newcomer-path -->`` in README.md.

Each command runs in a fresh folder, in order, with ``fada`` as ``python -m fada_cli.main`` of this tree and
``python`` as this interpreter. The only thing added is the smoke override the README itself gives for training
commands (``train.max_steps=N``, here with N = 2), so that a stage which needs an option the README does not show
fails here. The path must go curate → train-teacher → distill → export → generate, and the video it ends with must
decode at the exported model's frame size.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- newcomer-path -->"
SMOKE_KEY = "train.max_steps"
SMOKE_STEPS = 2
TRAINING = {"train-teacher", "distill"}
STAGES = ["curate", "train-teacher", "distill", "export", "generate"]


def newcomer_block(text: str) -> str:
    """The first ```bash block after the marker."""
    assert text.count(MARKER) == 1, f"README.md must hold {MARKER} exactly once"
    m = re.search(r"```bash\n(.*?)\n```", text[text.index(MARKER):], re.S)
    assert m, f"no ```bash block after {MARKER}"
    return m.group(1)


def commands(block: str) -> list[list[str]]:
    """Shell lines (continuations joined, comments and blank lines dropped) as argument lists."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def to_subprocess(argv: list[str]) -> list[str]:
    if argv[0] == "fada":
        argv = [sys.executable, "-m", "fada_cli.main", *argv[1:]]
        if argv[3] in TRAINING:
            argv.append(f"{SMOKE_KEY}={SMOKE_STEPS}")
        return argv
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"the newcomer block may run only `fada` and `python`, not {argv[0]!r}")


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{shlex.join(argv)}: expected {name}"
    return argv[argv.index(name) + 1]


def test_block_parses():
    text = (ROOT / "README.md").read_text()
    cmds = commands(newcomer_block(text))
    # the smoke override is one the README itself tells the reader to add
    assert re.search(rf"`{re.escape(SMOKE_KEY)}=\d+`", text), f"README.md must mention `{SMOKE_KEY}=N`"
    stages = [c[1] for c in cmds if c[0] == "fada" and c[1] in STAGES]
    assert set(stages) == set(STAGES), f"the path must run {' -> '.join(STAGES)}: {stages}"
    first = [stages.index(s) for s in STAGES]
    assert first == sorted(first), f"the path must run {' -> '.join(STAGES)} in that order: {stages}"
    assert all(c[0] in ("fada", "python") for c in cmds)


def test_newcomer_path(tmp_path):
    cmds = commands(newcomer_block((ROOT / "README.md").read_text()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for argv in cmds:
        res = subprocess.run(to_subprocess(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (f"README newcomer path: `{shlex.join(argv)}` exited {res.returncode}\n"
                                     f"stderr (end):\n{res.stderr[-3000:]}\nstdout (end):\n{res.stdout[-2000:]}")

    export = next(c for c in cmds if c[:2] == ["fada", "export"])
    generate = [c for c in cmds if c[:2] == ["fada", "generate"]][-1]
    model = tmp_path / option(generate, "--model")
    assert model == tmp_path / option(export, "--out"), "generate must use the exported model"
    resolution = json.loads((model / "fada_model.json").read_text())["model"]["resolution"]

    import av

    video = tmp_path / option(generate, "--out")
    assert video.suffix == ".mp4" and video.is_file()
    with av.open(str(video)) as container:
        assert container.streams.audio, "no audio track"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) > 0
    assert all(f.shape == (resolution, resolution, 3) for f in frames)
