"""`fada eval`: folder mode, reports (table / JSON / CSV), missing weights, CLI exit codes, --model generation with
NFE-D and wall time, and a guidance sweep on a tiny exported model writing its PNGs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from fada.errors import FadaError
from fada.metrics.weights import FID_INCEPTION, FVD_RESNET50
from fada.stages import evaluate
from tests.evaluation.helpers import noisy, talking_clip, write_clip, write_weights

from .generate_helpers import export_model, write_portrait, write_speech


@pytest.fixture(autouse=True)
def _one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Generated a, b (noisy copies of their references) and z (no reference); 0.8 s, 64 px, with audio."""
    root = tmp_path_factory.mktemp("eval_folders")
    for i, name in enumerate("ab"):
        frames, audio = talking_clip(30 + i, 0.8)
        write_clip(root / "ref" / f"{name}.mp4", frames, audio)
        write_clip(root / "gen" / f"{name}.mp4", noisy(frames, i), audio)
    frames, audio = talking_clip(40, 0.8)
    write_clip(root / "gen" / "z.mp4", frames, audio)
    return root / "gen", root / "ref"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny exported Fast model and a two-item test list with reference videos."""
    root = tmp_path_factory.mktemp("eval_model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = export_model(root, "fast")
    torch.set_num_threads(threads)
    write_portrait(root / "face.png")
    write_speech(root / "speech.wav", 0.4)
    lines = []
    for i in range(2):
        frames, audio = talking_clip(50 + i, 0.4, size=32)
        write_clip(root / f"gt{i}.mp4", frames, audio)
        lines.append(json.dumps({"portrait": "face.png", "audio": "speech.wav", "reference": f"gt{i}.mp4",
                                 "name": f"item{i}", "seed": i}))
    (root / "test.jsonl").write_text("\n".join(lines) + "\n")
    return {"model": model, "testset": root / "test.jsonl", "weights": write_weights(root / "w", ("fvd",))}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fada_cli.main", "eval", *map(str, args)], capture_output=True,
                          text=True)


def test_folder_mode_report_table_json_csv(folders, tmp_path, capsys):
    gen, ref = folders
    out = tmp_path / "r" / "report.json"
    rep = evaluate.run(["fid", "sync", "efid", "iqa"], generated=gen, reference=ref, out=out, frame_stride=2)
    data = json.loads(out.read_text())
    assert data["metrics"] == pytest.approx(rep["metrics"])
    assert set(data["metrics"]) == {"sync_wf_conf", "sync_wf_corr", "sync_wf_offset", "efid_sub",
                                    "iqa_colorfulness", "iqa_sharpness"}
    assert FID_INCEPTION in data["skipped"]["fid"] and "--weights-dir" in data["skipped"]["fid"]
    assert "weight-free" in data["skipped"]["sync"]
    assert data["counts"]["unpaired_generated"] == ["z"] and data["counts"]["paired"] == 2
    assert data["settings"]["frame_stride"] == 2 and data["settings"]["metrics_requested"] == ["fid", "sync",
                                                                                             "efid", "iqa"]
    assert data["notes"] and all("sync_wf_conf" in v for v in data["videos"])
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["name"] for r in rows] == ["a", "b", "z", "(aggregate)"]
    assert float(rows[-1]["efid_sub"]) == pytest.approx(rep["metrics"]["efid_sub"]) and rows[0]["efid_sub"] == ""
    assert rows[2]["reference"] == "" and float(rows[2]["iqa_sharpness"]) > 0
    text = capsys.readouterr().out
    assert "Aggregate" in text and "skipped" in text and "unpaired generated: z" in text


def test_cli_only_missing_weights_is_one_line_exit_2(folders, tmp_path):
    gen, ref = folders
    out = tmp_path / "report.json"
    res = cli("--metrics", "fid,fvd", "--generated", gen, "--reference", ref, "--weights-dir", tmp_path,
              "--out", out)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert FID_INCEPTION in lines[0] and FVD_RESNET50 in lines[0] and "--weights-dir" in lines[0]
    assert not out.exists()
    res = cli("--metrics", "iqa", "--generated", gen, "--sweep", "cfg_audio=1:8")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1


def test_cli_fvd_reports_its_protocol(folders, tmp_path):
    """`fada eval --metrics fvd,fvd_i` says which published protocol each score follows (terminal and JSON)."""
    gen, ref = folders
    weights = write_weights(tmp_path / "w", which=("fvd", "fvd_i"))
    out = tmp_path / "rep.json"
    res = cli("--metrics", "fvd,fvd_i", "--generated", gen, "--reference", ref, "--weights-dir", weights,
              "--out", out)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["metrics"]["fvd"] > 0 and data["metrics"]["fvd_i"] > 0  # 20-frame clips: one FVD-I clip each
    assert data["protocols"]["fvd"].startswith("FVD-R as DisCo's FVD-3DRN50")
    assert data["protocols"]["fvd_i"].startswith("FVD-I as StyleGAN-V's fvd2048_16f")
    flat = " ".join(res.stdout.split())
    assert "protocol fvd: FVD-R as DisCo's FVD-3DRN50" in flat and "16-frame segments" in flat
    assert "protocol fvd_i: FVD-I as StyleGAN-V's fvd2048_16f" in flat


def test_cli_runs_what_can_run(folders, tmp_path):
    gen, ref = folders
    out = tmp_path / "o" / "rep.json"
    res = cli("--generated", gen, "--reference", ref, "--out", out)  # default fid,fvd,sync, no weights
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert set(data["skipped"]) == {"fid", "fvd", "sync"} and "sync_wf_conf" in data["metrics"]
    assert (tmp_path / "o" / "rep.csv").is_file() and "sync_wf_conf" in res.stdout


@pytest.mark.parametrize("kw,msg", [
    (dict(), "nothing to evaluate"),
    (dict(reference="r"), "--reference needs --generated"),
    (dict(generated="g", model="m", testset="t"), "not both"),
    (dict(model="m"), "--model needs --testset"),
    (dict(testset="t"), "--testset needs --model"),
    (dict(generated="g", sweep="cfg_audio=1:2:1"), "--sweep generates videos"),
    (dict(model="m", testset="t", sweep="cfg_audio=1:2:1", cfg_audio=2.0), "the sweep sets it"),
    (dict(model="m", testset="t", sweep="cfg_audio=2:1:1"), "STOP is smaller"),
    (dict(generated="g", decoder="taesd"), "--decoder is for --model"),
    (dict(model="m", testset="t", decoder="tiny"), "--decoder 'tiny': choose sd"),
])
def test_argument_errors(kw, msg):
    with pytest.raises(FadaError, match=msg):
        evaluate.run(["iqa"], **kw)


def test_model_mode_generates_and_times(tiny, tmp_path):
    out = tmp_path / "ev" / "report.json"
    rep = evaluate.run(["iqa", "sync"], model=tiny["model"], testset=tiny["testset"], out=out, print_table=False)
    assert sorted(p.name for p in (tmp_path / "ev" / "report_videos").iterdir()) == ["item0.mp4", "item1.mp4"]
    rows = {r["name"]: r for r in rep["videos"]}
    for r in rows.values():
        assert r["nfe_d"] == 6 and r["reference"].endswith(".mp4") and r["frames"] == 10
        assert r["video_seconds"] == pytest.approx(0.4) and r["wall_s_per_video_s"] > 0
        assert r["wall_s_per_video_s"] == pytest.approx(r["gen_seconds"] / r["video_seconds"])
    m = rep["metrics"]
    assert m["nfe_d"] == 6 and m["wall_s_per_video_s"] == pytest.approx(
        sum(r["gen_seconds"] for r in rows.values()) / 0.8)
    assert "iqa_sharpness" in m and "sync_wf_conf" in m
    assert rep["settings"]["plan"].startswith("mode fast") and rep["settings"]["model_load_seconds"] > 0
    assert rep["settings"]["decoder"] == "pixel-codec(x2)"  # the folder's own codec decodes


def test_sweep_on_tiny_model_writes_pngs(tiny, tmp_path, capsys):
    out = tmp_path / "sw" / "report.json"
    rep = evaluate.run(["fvd", "sync", "efid", "iqa_sharpness"], model=tiny["model"], testset=tiny["testset"],
                       weights_dir=tiny["weights"], sweep="cfg_audio=1:2:1", out=out)
    assert rep["sweep"] == {"param": "cfg_audio", "values": [1.0, 2.0]}
    assert [e["cfg_audio"] for e in rep["entries"]] == [1.0, 2.0]
    assert all("told to the student: cfg_audio" in e["plan"] for e in rep["entries"])
    for e in rep["entries"]:  # FVD-R: these 10-frame videos are one padded segment (FVD-I needs 16 frames)
        assert {"fvd", "efid_sub", "sync_wf_conf", "iqa_sharpness", "nfe_d"} <= set(e["metrics"])
    pngs = sorted(p.name for p in out.parent.glob("*.png"))
    assert pngs == sorted(f"sweep_cfg_audio_{m}.png" for m in ("fvd", "efid_sub", "sync_wf_conf", "sync_wf_corr",
                                                               "sync_wf_offset", "iqa_sharpness"))
    assert all((out.parent / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert sorted(p.name for p in (out.parent / "report_videos").iterdir()) == ["cfg_audio=1", "cfg_audio=2"]
    data = json.loads(out.read_text())
    assert len(data["entries"]) == 2 and len(data["plots"]) == 6
    rows = list(csv.reader(out.with_suffix(".csv").open()))
    assert rows[0][0] == "cfg_audio" and [r[0] for r in rows[1:]] == ["1.0", "2.0"]
    assert "Sweep over cfg_audio" in capsys.readouterr().out


def test_nothing_computable_writes_report_and_fails(folders, tmp_path):
    gen, _ = folders
    w = write_weights(tmp_path / "w", ("fvd_i",))
    out = tmp_path / "report.json"
    with pytest.raises(FadaError, match="no metric could be computed .*fvd_i: no reference videos"):
        evaluate.run(["fvd_i"], generated=gen, weights_dir=w, out=out, print_table=False)
    assert json.loads(out.read_text())["skipped"]["fvd_i"].startswith("no reference videos")
