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


def test_still_reference_row_is_finite_and_scores_no_motion():
    """The reference row: the first truth frame repeated. Its PSNR is finite though one frame is exact (PSNR per
    video from its mean squared error), its sync is the floor (no motion), and its noise measure is the truth's."""
    from fada.data.synthetic import render_clip, sample_identity, synth_speech
    from fada.stages.demo import roughness, still_reference

    rng = np.random.default_rng(1)
    clips = []
    for i in range(2):
        audio = synth_speech(2.0, rng)
        clips.append({"audio": audio, "truth": render_clip(sample_identity(rng), audio, size=64, seed=i)})
    still = [still_reference(c) for c in clips]
    assert all(len(s) == len(c["truth"]) and (s == c["truth"][0]).all() for s, c in zip(still, clips))
    m = evaluate(still, clips)
    mse = np.mean((clips[0]["truth"].astype(float) - still[0].astype(float)) ** 2)
    assert np.isfinite(m["psnr"]) and 20 < m["psnr"] < 60
    assert abs(evaluate(still[:1], clips[:1])["psnr"] - 10 * np.log10(255 ** 2 / mse)) < 1e-6
    assert m["sync"] <= 0.05 < evaluate([c["truth"] for c in clips], clips)["sync"]
    noise = rng.integers(0, 256, still[0].shape, dtype=np.uint8)
    assert roughness(noise) > 5 * roughness(clips[0]["truth"])
    assert abs(m["roughness"] - roughness(np.concatenate([s for s in still]))) < 1e-9
    assert m["mouth_corr"] == 0.0  # a still copy does not move its mouth
    t = evaluate([c["truth"] for c in clips], clips)
    assert t["mouth_corr"] == pytest.approx(1.0) and t["psnr_elsewhere"] == t["psnr_mouth"] == 100.0
    assert t["noise_ratio"] == 1.0 and m["psnr_elsewhere"] > m["psnr_mouth"]  # the head sways less than the mouth moves


def test_evaluate_warns_about_nothing():
    """`fada demo` scores the truth against itself and the still reference (one exact frame): no warning, finite
    numbers, the truth's whole-frame PSNR at the regions' cap."""
    import warnings

    from fada.data.synthetic import render_clip, sample_identity, synth_speech
    from fada.evaluation.regions import MAX_PSNR
    from fada.stages.demo import still_reference

    rng = np.random.default_rng(2)
    audio = synth_speech(1.0, rng)
    clips = [{"audio": audio, "truth": render_clip(sample_identity(rng), audio, size=64, seed=0)}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        truth = evaluate([c["truth"] for c in clips], clips)
        still = evaluate([still_reference(c) for c in clips], clips)
    assert truth["psnr"] == MAX_PSNR and np.isfinite(still["psnr"]) and still["psnr"] < MAX_PSNR


def test_contact_sheet_rows_per_identity_columns_per_model(tmp_path):
    import cv2

    from fada.stages.demo import contact_sheet

    rng = np.random.default_rng(0)
    clips = [{"truth": rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)} for _ in range(3)]
    videos = {k: [rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
              for k in ("teacher", "balanced", "fast")}
    path = contact_sheet(tmp_path / "sheet.png", clips, videos, frames=4, scale=3)
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    panel = 4 * 32 + 4  # 4 frames and a 2-pixel border each side
    assert img.shape == (28 + 3 * 3 * (32 + 4), 4 * 3 * panel, 3)
    # row 2, the "balanced" panel, its first frame: nearest-neighbour upscaled frame 0 of that video
    y0, x0 = 28 + 3 * (2 * (32 + 4) + 2), 3 * (2 * panel + 2)
    np.testing.assert_array_equal(img[y0:y0 + 96:3, x0:x0 + 96:3], videos["balanced"][2][0])
    assert not list(tmp_path.glob(".sheet*"))  # written atomically, no temporary left


def test_quick_report_says_it_is_a_smoke_run():
    report = {"machine": "x", "seconds": 60.0, "shuffled_audio_sync": 0.1, "ratio_teacher_fast": 5.0,
              "stage_seconds": {"corpus": 1.0}, "quick": True, "truth": {"sync": 0.7, "shuffled_sync": 0.2,
                                                                         "roughness": 8.0},
              "curation": {"videos": 4, "clean": 2, "A": {"videos": 1, "precision": 1.0, "recall": 0.5},
                           "B": {"videos": 3, "precision": 0.67, "recall": 1.0}},
              "rows": [{"model": m, "nfe": n, "seconds_per_video_second": 1.0, "sync": 0.5, "psnr": 20.0,
                        "ssim": 0.5, "fd": 1.0, "roughness": 9.0}
                       for m, n in (("teacher", 75), ("balanced", 18), ("fast", 6), ("reference", 0))]}
    md = render_markdown(report)
    assert "Smoke run" in md and "not meant to be faces" in md
    assert "| reference | 0 |" in md and "contact_sheet.png" in md and "(the truth: 8.0" in md
    assert "Smoke run" not in render_markdown({**report, "quick": False})


def test_paper_tables_take_the_ablation_rows():
    from fada.stages.demo import PAPER_TABLES, paper_tables

    names = [name for _, entries in PAPER_TABLES for _, name in entries]
    rows = [{"model": n, "nfe": 18, "sync": 0.5, "psnr": 20.0, "ssim": 0.8, "fd": 1.0, "roughness": 9.0}
            for n in dict.fromkeys(names)]
    text = "\n".join(paper_tables(rows))
    assert text.count("**Table") == 3 and "| TCD | 18 |" in text and "| CFG tokens |" in text
    assert paper_tables(rows[:1]) == []  # without --ablations: no tables


@pytest.mark.parametrize("ablations", [False, True])
def test_every_step_has_its_own_number(ablations):
    """Each distillation is a step of its own: the numbers run 1..n once each and n counts every step."""
    import re

    from fada.stages.demo import ABLATIONS, QUICK, step_lines, variants

    students = variants(ablations)
    lines = step_lines(QUICK, students)
    numbers = [re.match(r"\[(\d+)/(\d+)\] ", line).groups() for line in lines]
    n = 6 + 2 + (len(ABLATIONS) if ablations else 0)
    assert [int(k) for k, _ in numbers] == list(range(1, n + 1)) and {int(t) for _, t in numbers} == {n}
    assert sum("distilling" in line for line in lines) == len(students)
    assert lines[3].startswith("[4/") and "distilling balanced" in lines[3] and "distilling fast" in lines[4]


def test_the_smoke_run_samples_its_teacher_in_fewer_steps(tmp_path):
    """`--quick` samples the teacher in 10 DDIM steps (30 NFE per clip, not 75); the full demo uses the model's own
    25, and the students always run their own plans."""
    from fada.pipeline import FadaPipeline
    from fada.stages.demo import FULL, QUICK, generation_runs
    from tests.stages.generate_helpers import export_model

    teacher = FadaPipeline.from_pretrained(export_model(tmp_path, "teacher"))
    for size, nfe in ((QUICK, 30), (FULL, 75)):
        runs = {row: opts for row, _, opts in generation_runs(["teacher", "balanced", "fast"], size, False)}
        assert teacher.plan("teacher", **runs["teacher"]).nfe_per_clip == nfe
        assert runs["balanced"] == runs["fast"] == {}
    assert generation_runs(["teacher", "balanced", "fast"], QUICK, True)[-1][2] == {"cfg_audio": 1.0, "cfg_ref": 1.0}


def test_held_pose_row_is_the_truth_without_its_sway():
    """The `held pose` row's clip: the truth's first frame and crop, the head held (the frame's top quarter, hair
    and background, never changes) where the truth's sways; scored, it beats the still copy in the mouth box."""
    from fada.stages.demo import evaluate, still_reference, test_clips

    clips = test_clips(2, 2.0, 32)
    for c in clips:
        held, truth = c["held"].astype(np.float64), c["truth"].astype(np.float64)
        assert held.shape == truth.shape and np.array_equal(held[0], truth[0])
        assert np.abs(held[:, :8] - held[:1, :8]).max() == 0 < np.abs(truth[:, :8] - truth[:1, :8]).max()
    held, still = evaluate([c["held"] for c in clips], clips), evaluate([still_reference(c) for c in clips], clips)
    assert held["psnr_mouth"] > still["psnr_mouth"] + 1.0 and held["mouth_corr"] > 0.5
