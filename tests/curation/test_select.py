"""Thresholds -> A/B with reasons, the looser-lenient rule, data-source tags, and the report."""

import json

import pytest

from fada.config import load_recipe
from fada.config.schema import CurateConfig, FilterThresholds
from fada.curation.report import summarize, write_report
from fada.curation.select import FILTER_NAMES, load_metadata, reasons, select, source_tag
from fada.errors import ConfigError, FadaError


def good_scores(**kw):
    s = {"source": None, "sharpness": 200.0, "brightness": 120.0, "face_size": 300.0, "sync_offset": 0,
         "sync_confidence": 0.6, "sync_method": "weight_free", "background_motion": 0.1, "head_motion": 0.003,
         "mouth_motion": 0.12}
    s.update(kw)
    return s


@pytest.fixture
def cfg():
    return CurateConfig()


@pytest.mark.parametrize("change, reason", [
    ({"sharpness": 10.0}, "sharpness"), ({"brightness": 20.0}, "brightness"), ({"brightness": 240.0}, "brightness"),
    ({"face_size": 100.0}, "face_size"), ({"sync_offset": -6}, "sync_offset"),
    ({"sync_confidence": 0.1}, "sync_confidence"), ({"background_motion": 5.0}, "background_motion"),
    ({"head_motion": 0.05}, "head_motion"), ({"mouth_motion": 0.03}, "mouth_motion"),
])
def test_each_filter_names_its_reason(cfg, change, reason):
    assert reasons(good_scores(), cfg.strict) == []
    assert reasons(good_scores(**change), cfg.strict) == [reason]
    assert reasons(good_scores(**change), cfg.lenient) == [reason]


def test_moderate_clip_is_in_B_not_A(cfg):
    moderate = good_scores(sharpness=40.0, sync_offset=3, background_motion=1.0)
    assert reasons(moderate, cfg.strict) == ["sharpness", "sync_offset", "background_motion"]
    assert reasons(moderate, cfg.lenient) == []


def test_unmeasurable_background_passes_and_syncnet_uses_its_own_floor(cfg):
    assert reasons(good_scores(background_motion=None), cfg.strict) == []
    sn = good_scores(sync_method="syncnet", sync_confidence=2.0)
    assert reasons(sn, cfg.strict) == ["sync_confidence"] and reasons(sn, cfg.lenient) == []


def test_select_rows_and_a_subset_of_b(cfg):
    clip = {"id": "v-000", "source_video": "v.mp4", "video": "clips/v-000.mp4", "wav": "clips/v-000.wav",
            "start": 0.0, "end": 3.0, "frames": 75, "fps": 25, "face": {}, "scores": good_scores()}
    weak = {**clip, "id": "v-001", "scores": good_scores(sharpness=40.0)}
    results = [
        {"source": "v.mp4", "status": "ok", "clips": [clip, weak]},
        {"source": "sub/empty.mov", "status": "no_face", "detail": "x", "clips": []},
        {"source": "bad.mp4", "status": "skipped", "skipped": "unreadable", "detail": "bad.mp4: broken", "clips": []},
    ]
    rows = select(results, cfg, {"v": "studio"})
    assert [r["id"] for r in rows] == ["v-000", "v-001", "sub__empty", "bad"]
    assert rows[0]["in_A"] and rows[0]["in_B"] and rows[0]["scores"]["source"] == "studio"
    assert not rows[1]["in_A"] and rows[1]["in_B"] and rows[1]["reasons"] == {"strict": ["sharpness"], "lenient": []}
    assert rows[2]["reasons"] == {"strict": ["no_face"], "lenient": ["no_face"]} and rows[2]["video"] is None
    assert rows[3]["skipped"] == "unreadable" and not rows[3]["in_B"]
    for r in rows:
        assert r["in_B"] or not r["in_A"]


def test_select_asserts_a_subset_of_b_when_check_is_bypassed():
    bad = CurateConfig(lenient=FilterThresholds(min_sharpness=500.0))  # built directly: check() never ran
    assert any("lenient.min_sharpness" in p for p in bad.check())
    clip = {"id": "c", "source_video": "v.mp4", "video": "c.mp4", "wav": "c.wav", "scores": good_scores()}
    with pytest.raises(AssertionError, match="in A but not in B"):
        select([{"source": "v.mp4", "status": "ok", "clips": [clip]}], bad)


@pytest.mark.parametrize("override, key", [
    ("curate.lenient.min_sharpness=100", "curate.lenient.min_sharpness"),
    ("curate.lenient.max_sync_offset=1", "curate.lenient.max_sync_offset"),
    ("curate.lenient.max_head_motion=0.001", "curate.lenient.max_head_motion"),
    ("curate.lenient.sources=[web]", "curate.lenient.sources"),
    ("curate.resolution=65", "curate.resolution"),
])
def test_recipe_rejects_a_lenient_set_stricter_than_strict(override, key):
    with pytest.raises(ConfigError) as e:
        load_recipe("tiny-curate", [override], stage="curate")
    assert any(p.startswith(key) for p in e.value.problems)


def test_shipped_recipes_are_consistent():
    for name in ("curate", "tiny-curate"):
        cfg = load_recipe(name, stage="curate").curate
        assert cfg.check() == []
    ok = load_recipe("tiny-curate", ["curate.strict.sources=[studio]", "curate.lenient.sources=[studio, web]"],
                     stage="curate").curate
    assert ok.strict.sources == ["studio"]


def test_source_filter(cfg):
    t = FilterThresholds(sources=["studio"])
    assert reasons(good_scores(source="studio"), t) == []
    assert reasons(good_scores(source="web"), t) == ["source"]
    assert reasons(good_scores(source=None), t) == ["source"]


def test_metadata_formats(tmp_path):
    j = tmp_path / "meta.json"
    j.write_text(json.dumps({"a.mp4": "studio", "sub/b.mp4": {"source": "web"}}))
    tags = load_metadata(j)
    assert source_tag(tags, "x/a.mp4") == "studio" and source_tag(tags, "sub/b.mp4") == "web"
    assert source_tag(tags, "c.mp4") is None
    jl = tmp_path / "meta.jsonl"
    jl.write_text('{"file": "a.mp4", "source": "tv"}\n{"video": "c", "tag": "web"}\n')
    tags = load_metadata(jl)
    assert source_tag(tags, "a.mp4") == "tv" and source_tag(tags, "deep/c.mkv") == "web"
    assert load_metadata(None) == {}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "a.mp4"}\n')
    with pytest.raises(FadaError, match="bad.jsonl"):
        load_metadata(bad)
    with pytest.raises(FadaError, match="nope.json"):
        load_metadata(tmp_path / "nope.json")


def test_report_counts_and_files(tmp_path, cfg):
    clip = {"id": "a", "source_video": "v.mp4", "video": "clips/a.mp4", "wav": "clips/a.wav", "start": 0.0,
            "end": 3.0, "scores": good_scores()}
    results = [{"source": "v.mp4", "status": "ok", "clips": [
        clip,
        {**clip, "id": "b", "scores": good_scores(sharpness=40.0)},  # strict only: sharpness
        {**clip, "id": "c", "scores": good_scores(sharpness=10.0, sync_offset=9, background_motion=None)},
    ]}, {"source": "n.mp4", "status": "no_face", "clips": []},
        {"source": "x.mp4", "status": "skipped", "skipped": "no_audio", "detail": "x.mp4: no audio track", "clips": []}]
    rows = select(results, cfg)
    s = summarize(rows)
    assert (s["clips"], s["A"], s["B"]) == (3, 1, 2)
    assert s["filters"]["sharpness"]["strict"] == {"failed": 2, "only": 1}
    assert s["filters"]["sharpness"]["lenient"] == {"failed": 1, "only": 0}
    assert s["filters"]["sync_offset"]["lenient"] == {"failed": 1, "only": 0}
    assert s["videos_without_clips"] == {"no_face": 1}
    assert s["skipped"] == [{"video": "x.mp4", "reason": "no_audio", "detail": "x.mp4: no audio track"}]
    write_report(tmp_path, rows, cfg)
    md = (tmp_path / "report.md").read_text()
    assert all(f"| {name} |" in md for name in FILTER_NAMES) and "no_audio" in md
    assert (tmp_path / "histograms.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "report.json").read_text())["B"] == 2
