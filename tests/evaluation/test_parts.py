"""Known answers for the evaluation bookkeeping: streaming statistics, pairing, metric plans, sweeps, reports."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fada.errors import FadaError, MissingFileError
from fada.evaluation import RunningGaussian, frechet_running, pair_folders, parse_metrics, parse_sweep, plan_metrics
from fada.evaluation.faces import FaceCropper, mouth_box
from fada.evaluation.report import AGGREGATE_NAME, report_csv, write_report
from fada.evaluation.sweep import plot_sweep
from fada.evaluation.testset import read_testset
from fada.metrics.frechet import frechet_from_features
from fada.metrics.weights import FID_INCEPTION, SYNCNET


# ------------------------------------------------------------------------------------------- streaming statistics
def test_running_gaussian_equals_numpy_for_any_batching():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, (37, 6)) @ rng.normal(size=(6, 6)) + 1e3  # a large offset: no cancellation allowed
    for cuts in ([37], [1, 36], [5, 5, 27], [1] * 37):
        g = RunningGaussian()
        start = 0
        for c in cuts:
            g.update(x[start:start + c])
            start += c
        assert g.n == 37
        np.testing.assert_allclose(g.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(g.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    y = rng.normal(size=(20, 6))
    a, b = RunningGaussian().update(x[:10]).update(x[10:]), RunningGaussian().update(y)
    assert frechet_running(a, b) == pytest.approx(frechet_from_features(x, y), rel=1e-9)


@pytest.mark.parametrize("n1,n2", [(3, 4), (5, 200), (200, 6), (100, 120), (65, 64)])
def test_low_rank_frechet_is_exact(n1, n2):
    # fewer rows than dimensions on one or both sides (the fast path) and more on both (the general routine)
    rng = np.random.default_rng(n1 * 1000 + n2)
    x = rng.normal(size=(n1, 64)) * rng.uniform(0.1, 3, 64)
    y = rng.normal(0.3, 1.0, size=(n2, 64)) @ rng.normal(size=(64, 64)) / 8
    a, b = RunningGaussian(), RunningGaussian()
    for i in range(0, n1, 7):
        a.update(x[i:i + 7])
    b.update(y)
    assert (a.rows is not None) == (n1 <= 64) and (b.rows is not None) == (n2 <= 64)
    # rel 1e-7: the general routine takes square roots of round-off eigenvalues (~1e-15) of rank-deficient
    # covariances, which costs it ~1e-8 relative; the low-rank route has no such terms
    assert frechet_running(a, b) == pytest.approx(frechet_from_features(x, y), rel=1e-7)
    assert frechet_running(b, a) == pytest.approx(frechet_from_features(x, y), rel=1e-7)
    assert frechet_running(a, RunningGaussian().update(x)) == pytest.approx(0.0, abs=1e-8)


def test_running_gaussian_errors():
    g = RunningGaussian().update(np.zeros((1, 3)))
    with pytest.raises(FadaError, match="at least 2"):
        g.cov
    with pytest.raises(FadaError, match="dimension changed"):
        g.update(np.zeros((2, 4)))
    with pytest.raises(FadaError, match="NaN"):
        g.update(np.full((2, 3), np.nan))


# ------------------------------------------------------------------------------------------------------ pairing
def test_pairing_by_stem_across_containers(tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    for n in ("a.mp4", "b.mkv", "only_gen.webm", "notes.txt", ".hidden.mp4"):
        (gen / n).write_bytes(b"x")
    for n in ("a.mov", "b.mp4", "only_ref.avi"):
        (ref / n).write_bytes(b"x")
    p = pair_folders(gen, ref)
    assert [(q.name, q.generated.name, q.reference.name if q.reference else None) for q in p.items] == [
        ("a", "a.mp4", "a.mov"), ("b", "b.mkv", "b.mp4"), ("only_gen", "only_gen.webm", None)]
    assert p.summary() == {"generated": 3, "paired": 2, "unpaired_generated": ["only_gen"],
                           "unpaired_reference": ["only_ref"]}
    assert p.reference_given
    assert not pair_folders(gen).reference_given and len(pair_folders(gen).pairs) == 0


def test_pairing_errors(tmp_path):
    (tmp_path / "g").mkdir()
    with pytest.raises(FadaError, match="no videos"):
        pair_folders(tmp_path / "g")
    with pytest.raises(MissingFileError, match="--generated folder not found"):
        pair_folders(tmp_path / "nope")
    (tmp_path / "g" / "a.mp4").write_bytes(b"x")
    (tmp_path / "g" / "a.mov").write_bytes(b"x")
    with pytest.raises(FadaError, match="two videos named 'a'"):
        pair_folders(tmp_path / "g")


# ------------------------------------------------------------------------------------------------ metric plans
def test_parse_metrics():
    assert parse_metrics("fid, FVD,fid") == ["fid", "fvd"]
    assert parse_metrics(["all"]) == ["fid", "fvd", "fvd_i", "sync", "efid", "iqa", "regions"]
    assert parse_metrics(["iqa_sharpness", "sync-wf"]) == ["iqa_sharpness", "sync_wf"]
    with pytest.raises(FadaError, match="unknown metric 'lpips'"):
        parse_metrics("fid,lpips")
    with pytest.raises(FadaError, match="no metric"):
        parse_metrics(" , ")


def test_plan_without_weights(tmp_path):
    plan = plan_metrics(["fid", "sync", "efid", "iqa"], tmp_path)
    assert plan.run == ["sync_wf", "efid_sub"] and plan.iqa == ["iqa_colorfulness", "iqa_sharpness"]
    assert FID_INCEPTION in plan.skipped["fid"] and "--weights-dir" in plan.skipped["fid"]
    assert SYNCNET in plan.skipped["sync"] and "weight-free sync_wf_*" in plan.skipped["sync"]
    assert "efid_sub" in plan.notes[0]
    only = plan_metrics(["fid", "fvd"], None)
    assert not only.runnable and "no --weights-dir given" in only.skipped["fvd"]
    (tmp_path / SYNCNET).write_bytes(b"x")
    assert plan_metrics(["sync"], tmp_path).run == ["sync"]
    with pytest.raises(MissingFileError, match="--coeffs folder"):
        plan_metrics(["efid"], None, coeffs=tmp_path / "nope")
    assert plan_metrics(["efid"], None, coeffs=tmp_path).run == ["efid"]


# ------------------------------------------------------------------------------------------------------- sweeps
def test_parse_sweep_grid():
    p, v = parse_sweep("cfg_audio=1:8:0.5")
    assert p == "cfg_audio" and len(v) == 15 and v[0] == 1.0 and v[-1] == 8.0 and v[1] == 1.5
    assert parse_sweep("cfg_ref=0.1:0.3:0.1") == ("cfg_ref", [0.1, 0.2, 0.3])  # inclusive despite round-off
    assert parse_sweep("cfg_ref=1:2.9:1")[1] == [1.0, 2.0]
    assert parse_sweep("cfg-ref=2,2.5,1")[1] == [2.0, 2.5, 1.0]
    assert parse_sweep("cfg_audio=6.5:6.5:1")[1] == [6.5]


@pytest.mark.parametrize("spec,msg", [
    ("cfg_audio", "expected PARAM=START:STOP:STEP"), ("steps=1:2:1", "can sweep cfg_audio or cfg_ref"),
    ("cfg_audio=1:8", "expected START:STOP:STEP"), ("cfg_audio=1:x:1", "'x' is not a number"),
    ("cfg_audio=1:8:0", "STEP must be positive"), ("cfg_audio=8:1:1", "STOP is smaller"),
    ("cfg_audio=-1:1:1", ">= 0"), ("cfg_audio=0:1000:1", "at most"), ("cfg_audio=1,1", "repeated"),
    ("cfg_audio=nan:1:1", "not a finite"),
])
def test_parse_sweep_errors(spec, msg):
    with pytest.raises(FadaError, match=msg) as e:
        parse_sweep(spec)
    assert "\n" not in str(e.value)


def test_plot_sweep_and_csv(tmp_path):
    rep = {"sweep": {"param": "cfg_audio", "values": [1.0, 2.0, 3.0]},
           "entries": [{"cfg_audio": v, "metrics": {"fvd": 10.0 / v, "sync_wf_conf": v / 10, "nfe_d": 6.0}}
                       for v in (1.0, 2.0, 3.0)]}
    rep["entries"][1]["metrics"]["fvd"] = float("nan")
    paths = plot_sweep(rep, tmp_path, exclude=("nfe_d",))
    assert sorted(p.name for p in paths) == ["sweep_cfg_audio_fvd.png", "sweep_cfg_audio_sync_wf_conf.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    j, c = write_report(rep, tmp_path / "r.json")
    assert json.loads(j.read_text())["entries"][1]["metrics"]["fvd"] is None  # NaN is not JSON
    rows = list(csv.reader(c.open()))
    assert rows[0] == ["cfg_audio", "fvd", "sync_wf_conf", "nfe_d"] and rows[3][0] == "3.0"


def test_report_csv_rows_and_aggregate():
    rep = {"metrics": {"fid": 3.5, "iqa_sharpness": 2.0},
           "videos": [{"name": "a", "generated": "g/a.mp4", "reference": "r/a.mp4", "iqa_sharpness": 1.5},
                      {"name": "b", "generated": "g/b.mp4", "reference": None, "iqa_sharpness": 2.5,
                       "errors": {"sync_wf": "no audio track"}}]}
    rows = list(csv.DictReader(report_csv(rep).splitlines()))
    assert [r["name"] for r in rows] == ["a", "b", AGGREGATE_NAME]
    assert rows[1]["errors"] == "sync_wf: no audio track" and rows[1]["reference"] == ""
    assert float(rows[2]["fid"]) == 3.5 and rows[0]["fid"] == ""


# ----------------------------------------------------------------------------------------------- faces, testset
def test_mouth_box_and_whole_frame_fallback():
    x0, y0, x1, y1 = mouth_box(0.4)
    assert 0.25 < x0 < x1 < 0.75 and 0.5 < y0 < y1 < 0.9  # the lower middle of a face crop with margin 0.4
    frames = np.zeros((4, 32, 40, 3), np.uint8)  # too small for the cascade; not square
    crops, how = FaceCropper().crops(frames)
    assert how == "whole-frame" and crops.shape == (4, 32, 32, 3)


def test_read_testset(tmp_path):
    for n in ("p.png", "a.wav", "r.mp4"):
        (tmp_path / n).write_bytes(b"x")
    lst = tmp_path / "t.jsonl"
    lst.write_text('{"portrait": "p.png", "audio": "a.wav", "reference": "r.mp4"}\n\n# c\n'
                   '{"portrait": "p.png", "audio": "a.wav", "name": "my clip", "seed": 3}\n')
    items = read_testset(lst)
    assert [i["name"] for i in items] == ["r", "my_clip"] and items[1]["seed"] == 3
    assert items[0]["reference"] == tmp_path / "r.mp4" and "reference" not in items[1]
    for text, msg in [('{"portrait": "p.png"}', "needs an object"), ('{"portrait": "p.png", "audio": "x.wav"}',
                      "audio of .*t.jsonl:1 not found"), ("{", "not valid JSON"),
                      ('{"portrait": "p.png", "audio": "a.wav", "out": "o"}', "unknown key"),
                      ('{"portrait": "p.png", "audio": "a.wav"}\n{"portrait": "p.png", "audio": "a.wav"}',
                       "already used on line 1"), ("", "no items")]:
        lst.write_text(text)
        with pytest.raises(FadaError, match=msg):
            read_testset(lst)
