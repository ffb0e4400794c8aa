"""`fada synth`: writes the clips and the answer key; bad options are one-line errors with exit code 2."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from fada_cli.main import app

runner = CliRunner()


def test_synth_writes_clips_and_labels(tmp_path):
    out = tmp_path / "corpus"
    res = runner.invoke(app, ["synth", str(out), "--count", "3", "--size", "96", "--seed", "2", "--seconds", "1:1.2",
                              "--defect-fraction", "0.34", "--workers", "1"])
    assert res.exit_code == 0, res.output
    labels = json.loads((out / "labels.json").read_text())
    assert len(labels) == 3 and sum(bool(lab["defects"]) for lab in labels) == 1
    for lab in labels:
        assert (out / lab["file"]).stat().st_size > 1000 and lab["size"] == 96
    assert "wrote 3 clips" in res.output


def test_synth_help_and_bad_options(tmp_path):
    res = runner.invoke(app, ["synth", "--help"])
    assert res.exit_code == 0 and "--defect-fraction" in res.output and len(res.output.splitlines()) > 5
    for bad, words in ((["--size", "63"], "--size 63"), (["--count", "0"], "--count 0"),
                       (["--defect-fraction", "1.5"], "--defect-fraction"), (["--seconds", "abc"], "--seconds")):
        proc = subprocess.run([sys.executable, "-m", "fada_cli.main", "synth", str(tmp_path / "x"), *bad],
                              capture_output=True, text=True)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    f = tmp_path / "afile"
    f.write_text("")
    res = runner.invoke(app, ["synth", str(f), "--count", "1"])
    assert res.exit_code == 2 and "not a folder" in res.output
