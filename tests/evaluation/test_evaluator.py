"""The Evaluator over real video files, each network on random weights saved in its upstream layout; the results
are checked against direct computations with the metric modules (known answers), and the skip paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fada.data.media import read_audio_track, read_video, write_video
from fada.evaluation import Evaluator, pair_folders, plan_metrics
from fada.evaluation.faces import FaceCropper
from fada.metrics.efid import efid_from_coeff_files
from fada.metrics.frechet import frechet_from_features
from fada.metrics.iqa import iqa_score
from fada.metrics.weights import FID_INCEPTION

from .helpers import noisy, talking_clip, write_clip, write_weights


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def short_set(tmp_path_factory):
    """18-frame 64 px clips (two FVD-R segments, one FVD-I clip): generated a, b (noisy copies of the references)
    and z (no reference); reference c has no generated video."""
    root = tmp_path_factory.mktemp("short")
    gen, ref = root / "gen", root / "ref"
    for i, name in enumerate(["a", "b", "c"]):
        frames, audio = talking_clip(i, 0.72)
        write_clip(ref / f"{name}.mp4", frames, audio)
        if name != "c":
            write_clip(gen / f"{name}.mp4", noisy(frames, 10 + i), audio)
    frames, audio = talking_clip(7, 0.72)
    write_clip(gen / "z.mp4", frames, audio)
    return gen, ref


def frechet_svd(x, y, ddof=1):
    """Independent reference for few rows: tr((S1 S2)^1/2) = nuclear norm of A Bᵀ / sqrt((n1-ddof)(n2-ddof))."""
    a, b = x - x.mean(0), y - y.mean(0)
    c = np.sqrt((len(x) - ddof) * (len(y) - ddof))
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / c
    d = x.mean(0) - y.mean(0)
    return d @ d + (a * a).sum() / (len(x) - ddof) + (b * b).sum() / (len(y) - ddof) - 2 * cross


def _decoded(folder, names):
    return [read_video(folder / f"{n}.mp4")[0] for n in names]


def test_networks_on_random_weights_match_direct_computation(weights, short_set):
    gen, ref = short_set
    plan = plan_metrics(["fid", "fvd", "fvd_i", "sync"], weights)
    assert plan.run == ["fid", "fvd", "fvd_i", "sync"] and not plan.skipped
    ev = Evaluator(plan, weights_dir=weights, frame_stride=8, device="cpu")
    rep = ev.evaluate(pair_folders(gen, ref))
    assert rep["counts"] == {"generated": 3, "paired": 2, "unpaired_generated": ["z"], "unpaired_reference": ["c"],
                             "failed": []}
    g, r = _decoded(gen, "ab"), _decoded(ref, "ab")  # the pairs only: z and c take no part
    fid = ev.models["fid"]
    want = frechet_svd(np.concatenate([fid.features(v[::8]) for v in g]),
                       np.concatenate([fid.features(v[::8]) for v in r]))
    assert rep["metrics"]["fid"] == pytest.approx(want, rel=1e-6)
    # per-video features, distance over videos: FVD-R (DisCo) with the unbiased covariance, FVD-I (StyleGAN-V)
    # with the biased one
    for m, ddof in (("fvd", 1), ("fvd_i", 0)):
        want = frechet_svd(np.stack([ev.models[m].features(v) for v in g]),
                           np.stack([ev.models[m].features(v) for v in r]), ddof)
        assert rep["metrics"][m] == pytest.approx(want, rel=1e-6)
    assert "DisCo" in rep["protocols"]["fvd"] and "StyleGAN-V" in rep["protocols"]["fvd_i"]
    assert set(rep["protocols"]) == {"fvd", "fvd_i"}
    assert rep["metrics"]["fid"] > 0 and rep["metrics"]["fvd"] > 0
    rows = {row["name"]: row for row in rep["videos"]}
    assert set(rows) == {"a", "b", "z"} and rows["z"]["reference"] is None
    # SyncNet on every generated video (the unpaired one too), from its own audio track and face crops
    frames, fps = read_video(gen / "z.mp4")
    crops, how = FaceCropper().crops(frames)
    s = ev.models["sync"].score(crops, read_audio_track(gen / "z.mp4", 16000), 16000, fps)
    assert rows["z"]["face"] == how
    assert (rows["z"]["sync_c"], rows["z"]["sync_d"], rows["z"]["sync_offset"]) == pytest.approx(
        (s["sync_c"], s["sync_d"], s["offset"]), rel=1e-5)
    assert rep["metrics"]["sync_d"] == pytest.approx(np.mean([rows[n]["sync_d"] for n in "abz"]))
    assert not any(k.startswith("sync_wf") for k in rep["metrics"])  # SyncNet ran: no substitute


def test_identical_sets_give_zero(weights, short_set):
    gen, ref = short_set
    ev = Evaluator(plan_metrics(["fid", "fvd_i", "efid", "iqa_sharpness"], weights), weights_dir=weights,
                   frame_stride=8, device="cpu")
    rep = ev.evaluate(pair_folders(ref, ref))
    m = rep["metrics"]
    x = np.random.default_rng(0).normal(size=(6, 20))  # the reference formula itself, against the library's
    assert frechet_svd(x, x[::-1] * 2) == pytest.approx(frechet_from_features(x, x[::-1] * 2))
    assert m["fid"] == pytest.approx(0.0, abs=1e-6) and m["fvd_i"] == pytest.approx(0.0, abs=1e-6)
    assert m["efid_sub"] == pytest.approx(0.0, abs=1e-8)
    want = np.mean([iqa_score(v, "iqa_sharpness") for v in _decoded(ref, "abc")])
    assert m["iqa_sharpness"] == pytest.approx(want, rel=1e-9)


def test_weight_free_sync_finds_a_known_audio_delay(tmp_path):
    for i, (name, shift) in enumerate([("in_sync", 0), ("late", 6)]):
        frames, audio = talking_clip(20 + i, 3.0)
        write_clip(tmp_path / f"{name}.mp4", frames, audio, shift_frames=shift)
    plan = plan_metrics(["sync"], None)
    assert plan.run == ["sync_wf"]
    rows = {r["name"]: r for r in Evaluator(plan).evaluate(pair_folders(tmp_path))["videos"]}
    assert rows["in_sync"]["sync_wf_offset"] == 0 and rows["late"]["sync_wf_offset"] == 6
    assert rows["in_sync"]["sync_wf_conf"] > 0.3 and rows["in_sync"]["face"] in ("detected", "tracked")


def test_skips_and_per_video_errors(tmp_path, short_set):
    gen, ref = short_set
    (tmp_path / FID_INCEPTION).write_bytes(b"not a checkpoint")
    plan = plan_metrics(["fid", "fvd", "sync", "iqa_sharpness"], tmp_path)
    assert "fvd weights not found" in plan.skipped["fvd"]
    ev = Evaluator(plan, weights_dir=tmp_path, device="cpu")
    assert "not a readable FID Inception" in plan.skipped["fid"] and plan.run == ["sync_wf"]
    # a broken video and a silent one beside a good pair
    g2 = tmp_path / "gen"
    g2.mkdir()
    (g2 / "broken.mp4").write_bytes(b"garbage")
    frames, _ = talking_clip(3, 0.4)
    write_video(g2 / "silent.mp4", frames, 25)
    (g2 / "a.mp4").write_bytes((gen / "a.mp4").read_bytes())
    rep = ev.evaluate(pair_folders(g2, ref))
    rows = {r["name"]: r for r in rep["videos"]}
    assert "cannot be" in rows["broken"]["errors"]["video"] and rep["counts"]["failed"] == ["broken"]
    assert "no audio track" in rows["silent"]["errors"]["sync_wf"] and "iqa_sharpness" in rows["silent"]
    assert "errors" not in rows["a"] and rep["metrics"]["sync_wf_conf"] == rows["a"]["sync_wf_conf"]
    assert set(rep["skipped"]) == {"fid", "fvd", "sync"}


def test_set_metrics_need_two_videos_and_references(tmp_path, short_set, weights):
    gen, ref = short_set
    only_a = tmp_path / "g"
    only_a.mkdir()
    (only_a / "a.mp4").write_bytes((gen / "a.mp4").read_bytes())
    ev = Evaluator(plan_metrics(["fvd_i", "efid"], weights), weights_dir=weights, device="cpu")
    rep = ev.evaluate(pair_folders(only_a, ref))
    assert "needs at least 2 paired videos per side" in rep["skipped"]["fvd_i"]
    assert "efid_sub" in rep["metrics"]  # frames are pooled: one pair is enough
    rep = Evaluator(plan_metrics(["efid"], None)).evaluate(pair_folders(gen))
    assert rep["skipped"]["efid_sub"].startswith("no reference videos")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "other.mp4").write_bytes(b"x")
    rep = Evaluator(plan_metrics(["efid"], None)).evaluate(pair_folders(gen, tmp_path / "r"))
    assert rep["skipped"]["efid_sub"] == "no generated video has a reference video of the same name"


def test_efid_from_coefficient_files(tmp_path, short_set):
    gen, ref = short_set
    rng = np.random.default_rng(0)
    for side in ("generated", "reference"):
        (tmp_path / side).mkdir()
        for n in "ab":
            np.save(tmp_path / side / f"{n}.npy", rng.normal(size=(16, 5)))
    ev = Evaluator(plan_metrics(["efid"], None, coeffs=tmp_path), coeffs=tmp_path)
    rep = ev.evaluate(pair_folders(gen, ref))
    want = efid_from_coeff_files([tmp_path / "generated" / f"{n}.npy" for n in "ab"],
                                 [tmp_path / "reference" / f"{n}.npy" for n in "ab"])
    assert rep["metrics"]["efid"] == pytest.approx(want)
    (tmp_path / "reference" / "b.npy").unlink()
    rep = ev.evaluate(pair_folders(gen, ref))
    assert "efid" not in rep["metrics"] and "b.npy" in rep["skipped"]["efid"]


def test_fvd_i_leaves_out_videos_under_16_frames(weights, tmp_path):
    """StyleGAN-V discards videos shorter than its 16-frame clip: FVD-I then skips, FVD-R still counts them."""
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for i, name in enumerate("ab"):
        frames, audio = talking_clip(i, 0.4)  # 10 frames
        write_clip(ref / f"{name}.mp4", frames, audio)
        write_clip(gen / f"{name}.mp4", noisy(frames, 10 + i), audio)
    ev = Evaluator(plan_metrics(["fvd", "fvd_i"], weights), weights_dir=weights, device="cpu")
    rep = ev.evaluate(pair_folders(gen, ref))
    assert rep["metrics"]["fvd"] > 0 and "fvd_i" not in rep["metrics"]
    assert "fvd_i needs at least 2 paired videos" in rep["skipped"]["fvd_i"]
    assert all("16 frames" in row["errors"]["fvd_i"] for row in rep["videos"])
    assert rep["counts"]["failed"] == []


def test_regions_against_the_reference_cropped_as_the_portrait(tmp_path):
    """A video that is the reference's own portrait crop beats the still copy inside the mouth and follows its
    mouth; a still copy scores as the still row says; a video at another fps is a per-video error."""
    from fada.evaluation.faces import portrait_crops

    frames, audio = talking_clip(5, 2.0, size=128)
    ref = write_clip(tmp_path / "ref" / "a.mp4", frames, audio)
    for name in ("b", "c"):
        (tmp_path / "ref" / f"{name}.mp4").write_bytes(ref.read_bytes())
    decoded, _ = read_video(ref)
    crops = portrait_crops(decoded, 64)
    write_clip(tmp_path / "gen" / "a.mp4", crops, audio)  # the model that draws the truth
    write_clip(tmp_path / "gen" / "b.mp4", np.repeat(crops[:1], len(crops), axis=0), audio)  # the still copy
    write_video(tmp_path / "gen" / "c.mp4", crops[::2], 12.5, audio=audio, sample_rate=16000)
    plan = plan_metrics("regions")
    assert plan.run == ["regions"] and plan.needs_reference
    rep = Evaluator(plan, device="cpu").evaluate(pair_folders(tmp_path / "gen", tmp_path / "ref"))
    rows = {r["name"]: r for r in rep["videos"]}
    a, b = rows["a"], rows["b"]
    assert a["still_psnr_mouth"] == pytest.approx(b["still_psnr_mouth"])
    assert a["psnr_mouth"] > a["still_psnr_mouth"] + 5 and a["psnr_elsewhere"] > a["still_psnr_elsewhere"]
    assert a["mouth_corr"] > 0.9 and 0.8 < a["noise_ratio"] < 1.2
    assert b["psnr_mouth"] == pytest.approx(b["still_psnr_mouth"], abs=1.0)
    assert b["psnr_elsewhere"] == pytest.approx(b["still_psnr_elsewhere"], abs=1.0)
    assert "12.5 fps" in rows["c"]["errors"]["regions"] and "psnr_mouth" not in rows["c"]
    assert rep["metrics"]["psnr_mouth"] == pytest.approx((a["psnr_mouth"] + b["psnr_mouth"]) / 2)
    # without references the metric is skipped with the reason
    rep = Evaluator(plan, device="cpu").evaluate(pair_folders(tmp_path / "gen"))
    assert "no reference videos" in rep["skipped"]["regions"]
