"""Pieces of `fada demo` (the whole demo runs for minutes; `fada demo --quick` is exercised by hand and CI-free)."""

import json

import numpy as np
import pytest

from fada.stages.demo import curation_scores, evaluate, frame_features, render_markdown


def test_curation_scores_against_labels(tmp_path):
    labels = [{"file": "videos/a.mp4", "defects": []}, {"file": "videos/b.mp4", "defects": []},
              {"file": "videos/c.mp4", "defects": ["blur"]}, {"file": "videos/d.mp4", "defects": ["no_face"]}]
    rows = [{"source_video": "a.mp4", "in_A": True, "in_B": True},
            {"source_video": "b.mp4", "in_A": False, "in_B": True},
            {"source_video": "c.mp4", "in_A": False, "in_B": True},
            {"source_video": "d.mp4", "in_A": False, "in_B": False}]
    m = tmp_path / "manifest.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = curation_scores(labels, m)
    assert s["A"] == {"videos": 1, "precision": 1.0, "recall": 0.5}
    assert s["B"]["videos"] == 3 and s["B"]["precision"] == pytest.approx(2 / 3) and s["B"]["recall"] == 1.0


def test_evaluate_rewards_the_truth_and_its_own_audio():
    from fada.data.synthetic import render_clip, sample_identity, synth_speech

    rng = np.random.default_rng(0)
    clips = []
    for i in range(2):
        audio = synth_speech(2.0, rng)
        frames = render_clip(sample_identity(rng), audio, size=64, seed=i)
        clips.append({"audio": audio, "truth": frames})
    perfect = evaluate([c["truth"] for c in clips], clips)
    noise = evaluate([rng.integers(0, 256, c["truth"].shape, dtype=np.uint8) for c in clips], clips)
    assert perfect["psnr"] > 60 and perfect["ssim"] > 0.99 and perfect["fd"] < 1e-6
    assert noise["psnr"] < 15 and noise["fd"] > 1.0
    assert perfect["sync"] > perfect["shuffled_sync"]  # a talking face follows its own audio
    assert frame_features(clips[0]["truth"][:3]).shape == (3, 8 * 8 * 3 + 64)


def test_report_markdown_has_one_row_per_model():
    report = {"machine": "x", "seconds": 60.0, "shuffled_audio_sync": 0.1, "ratio_teacher_fast": 12.0,
              "stage_seconds": {"corpus": 1.0},
              "curation": {"videos": 4, "clean": 2, "A": {"videos": 1, "precision": 1.0, "recall": 0.5},
                           "B": {"videos": 3, "precision": 0.67, "recall": 1.0}},
              "rows": [{"model": m, "nfe": n, "seconds_per_video_second": 1.0, "sync": 0.5, "psnr": 20.0,
                        "ssim": 0.5, "fd": 1.0} for m, n in (("teacher", 75), ("balanced", 18), ("fast", 6))]}
    md = render_markdown(report)
    assert md.count("\n| teacher |") == 1 and "| fast | 6 |" in md and "12.0×" in md
