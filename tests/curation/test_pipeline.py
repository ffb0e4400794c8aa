"""Per-video curation: resampling, face-track gaps, clip files, bounded-memory path, caching helpers, skips."""

import json

import numpy as np
import pytest
from skimage import data

from fada.config import load_recipe
from fada.curation import pipeline, scores
from fada.data.face import FaceDetector
from fada.data.media import read_audio, read_video, video_info, write_video

SRC_FPS, SIZE, SECONDS, GAP = 30, 128, 5.6, (2.2, 3.0)


@pytest.fixture(scope="module")
def gap_video(tmp_path_factory):
    """A 30 fps synthetic talking head whose face disappears (flat grey frames) from 2.2 s to 3.0 s."""
    from fada.data.synthetic import render_clip, sample_identity, synth_speech

    rng = np.random.default_rng(11)
    audio = synth_speech(SECONDS, rng)
    frames = render_clip(sample_identity(rng), audio, fps=SRC_FPS, size=SIZE, seed=4)
    frames[int(GAP[0] * SRC_FPS):int(GAP[1] * SRC_FPS)] = 128
    path = tmp_path_factory.mktemp("src") / "talk.mp4"
    write_video(path, frames, SRC_FPS, audio=audio, threads=1)
    return path


def job(path, out, **overrides):
    cfg = load_recipe("tiny-curate", [f"curate.{k}={v}" for k, v in overrides.items()], stage="curate").curate
    return {"path": str(path), "rel": path.name, "out": str(out), "params": pipeline.process_params(cfg)}


def test_gap_splits_track_and_clips_are_resampled(gap_video, tmp_path):
    res = pipeline.process_video(job(gap_video, tmp_path))
    assert res["status"] == "ok" and res["frames_resampled"] == 140  # 5.6 s at 25 fps
    clips = res["clips"]
    assert [c["id"] for c in clips] == ["talk-000", "talk-001"]
    first, second = clips
    assert first["start"] <= 0.3 and first["end"] <= GAP[0] + 0.1
    assert second["start"] >= GAP[1] - 0.1 and SECONDS - 0.6 <= second["end"] <= SECONDS
    for c in clips:
        assert 2.0 <= c["end"] - c["start"] <= 10.0 and c["fps"] == 25
        frames, fps = read_video(tmp_path / c["video"])
        assert frames.shape == (c["frames"], 64, 64, 3) and fps == pytest.approx(25)
        wav = read_audio(tmp_path / c["wav"])
        assert abs(wav.size - c["frames"] / 25 * 16000) <= 1
        assert video_info(tmp_path / c["video"]).has_audio
        assert c["face"]["detection_rate"] >= 0.7 and 40 < c["scores"]["face_size"] < 100
        s = c["scores"]
        assert s["sync_method"] == "weight_free" and abs(s["sync_offset"]) <= 2 and s["mouth_motion"] > 0.05


def test_long_tracks_are_sliced(gap_video, tmp_path):
    res = pipeline.process_video(job(gap_video, tmp_path, max_clip_seconds=2.0, min_clip_seconds=1.0))
    lengths = [c["frames"] for c in res["clips"]]
    assert all(25 <= n <= 50 for n in lengths) and len(lengths) >= 3


def test_streaming_path_matches_in_memory_path(gap_video, tmp_path, monkeypatch):
    a = pipeline.process_video(job(gap_video, tmp_path / "mem"))
    monkeypatch.setattr(pipeline, "KEEP_FRAMES_BYTES", 0)  # decode twice instead of keeping frames
    b = pipeline.process_video(job(gap_video, tmp_path / "stream"))
    assert json.dumps(a["clips"]) == json.dumps(b["clips"])


def test_lossless_clips_decode_to_the_crops_and_crf_is_checked(gap_video, tmp_path, monkeypatch):
    """curate.crf 0 (the tiny recipe's): every curated frame is exactly its crop, so two curations of one corpus
    give the same training data; the key is range-checked by name."""
    import av

    from fada.data.face import crop_square
    from fada.errors import ConfigError

    assert load_recipe("tiny-curate", [], stage="curate").curate.crf == 0
    assert load_recipe("curate", [], stage="curate").curate.crf == 18
    for bad in ("-1", "52"):
        with pytest.raises(ConfigError, match="curate.crf"):
            load_recipe("tiny-curate", [f"curate.crf={bad}"], stage="curate")
    crops = []
    real_add = pipeline._ClipState.add

    def add(self, frame, box, margin, ana):
        crops.append(crop_square(frame, box, margin, self.R))
        real_add(self, frame, box, margin, ana)

    monkeypatch.setattr(pipeline._ClipState, "add", add)
    res = pipeline.process_video(job(gap_video, tmp_path))
    lossy = pipeline.process_video(job(gap_video, tmp_path / "lossy", crf=18))
    assert res["status"] == lossy["status"] == "ok" and len(crops) == 2 * sum(c["frames"] for c in res["clips"])

    def planes(path):  # the clip's decoded YUV 4:2:0 planes, before any conversion back to RGB
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray() for f in c.decode(video=0)])

    def as_yuv(frames):  # what the writer hands x264: the crops in YUV 4:2:0
        return np.stack([av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                         .reformat(format="yuv420p").to_ndarray() for f in frames])

    want = as_yuv(crops[:sum(c["frames"] for c in res["clips"])])
    got = np.concatenate([planes(tmp_path / c["video"]) for c in res["clips"]])
    assert got.shape == want.shape and np.array_equal(got, want)
    lossy_got = np.concatenate([planes(tmp_path / "lossy" / c["video"]) for c in lossy["clips"]])
    assert lossy_got.shape == want.shape and not np.array_equal(lossy_got, want)  # crf 18 is not exact


def test_bad_files_come_back_as_skips(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01garbage" * 500)
    silent = tmp_path / "silent.mp4"
    write_video(silent, np.zeros((30, 32, 32, 3), np.uint8), 25)
    assert pipeline.process_video(job(corrupt, tmp_path))["skipped"] == "unreadable"
    res = pipeline.process_video({**job(silent, tmp_path), "cache": str(tmp_path / ".cache" / "k.json")})
    assert res == {**res, "status": "skipped", "skipped": "no_audio", "clips": []}
    assert json.loads((tmp_path / ".cache" / "k.json").read_text()) == res


def test_short_and_faceless_videos(tmp_path):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    write_video(tmp_path / "short.mp4", np.full((25, 64, 64, 3), 90, np.uint8), 25, audio=audio[:16000])
    write_video(tmp_path / "empty.mp4", np.full((75, 64, 64, 3), 90, np.uint8), 25, audio=audio)
    assert pipeline.process_video(job(tmp_path / "short.mp4", tmp_path))["status"] == "too_short"
    res = pipeline.process_video(job(tmp_path / "empty.mp4", tmp_path))
    assert res["status"] == "no_face" and res["face_detection_rate"] == 0.0 and res["clips"] == []


def _near_astronaut_face(box, scale=1.0):
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return 180 * scale < cx < 260 * scale and 70 * scale < cy < 160 * scale


def test_haar_candidates_find_the_astronaut():
    img = data.astronaut()
    assert any(_near_astronaut_face(b) for b in pipeline._candidates(FaceDetector(), img))
    # a large frame is searched at reduced size and the boxes scaled back
    big = np.kron(img, np.ones((2, 2, 1), np.uint8))
    assert any(_near_astronaut_face(b, 2.0) for b in pipeline._candidates(FaceDetector(), big))


def test_haar_track_follows_the_astronaut_as_it_moves():
    """Over moving frames the persistent face wins over any false hit (a larger one included)."""
    import cv2

    img = data.astronaut()
    frames = [cv2.warpAffine(img, np.float32([[0.5, 0, 3 * t], [0, 0.5, 2 * t]]), (256, 256)) for t in range(6)]
    det = FaceDetector()
    chosen = scores.choose_track([pipeline._candidates(det, f) for f in frames], max_skip=2)
    for t, box in enumerate(chosen):
        assert box is not None
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        assert abs(cx - (110 + 3 * t)) < 25 and abs(cy - (57 + 2 * t)) < 25


def test_inputs_and_cache_helpers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("a/x.MP4", "b.mkv", "notes.txt", ".hidden/y.mp4", "c.webm"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in pipeline.find_videos(tmp_path)] == ["a/x.MP4", "b.mkv",
                                                                                           "c.webm"]
    assert pipeline.clip_prefix("a/b c/x.y.mp4") == "a__b_c__x.y"
    params = pipeline.process_params(load_recipe("tiny-curate", stage="curate").curate)
    f = tmp_path / "b.mkv"
    k1 = pipeline.cache_key(f, "b.mkv", params)
    assert k1 == pipeline.cache_key(f, "b.mkv", params)
    assert k1 != pipeline.cache_key(f, "b.mkv", {**params, "resolution": 128})
    f.write_bytes(b"xy")
    assert k1 != pipeline.cache_key(f, "b.mkv", params)
    cache = tmp_path / "k.json"
    cache.write_text(json.dumps({"source": "b.mkv", "status": "ok", "clips": [{"video": "clips/v.mp4",
                                                                                "wav": "clips/v.wav"}]}))
    assert pipeline.load_cached(cache, tmp_path) is None  # its clip files are gone
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips/v.mp4").write_bytes(b"")
    (tmp_path / "clips/v.wav").write_bytes(b"")
    assert pipeline.load_cached(cache, tmp_path)["status"] == "ok"
    cache.write_text("{trunc")
    assert pipeline.load_cached(cache, tmp_path) is None


def test_syncnet_scores_sync_when_weights_are_given(gap_video, tmp_path, monkeypatch):
    """With curate.syncnet_weights the offset/confidence come from SyncNet on 224x224 crops (scorer faked here:
    the network itself is tested in tests/metrics/test_syncnet.py)."""
    weights = tmp_path / "syncnet_v2.model"
    weights.write_bytes(b"not used by the fake")
    seen = []

    class FakeScorer:
        def score(self, frames, audio, sr, fps):
            seen.append((frames.shape, sr, fps))
            return {"offset": -1, "sync_c": 6.5, "sync_d": 7.0}

    monkeypatch.setattr(pipeline, "_syncnet", lambda path: FakeScorer())
    res = pipeline.process_video(job(gap_video, tmp_path, syncnet_weights=str(weights)))
    assert res["status"] == "ok" and len(seen) == len(res["clips"]) == 2
    for c, (shape, sr, fps) in zip(res["clips"], seen):
        assert shape == (c["frames"], 224, 224, 3) and (sr, fps) == (16000, 25)
        s = c["scores"]
        assert (s["sync_method"], s["sync_offset"], s["sync_confidence"]) == ("syncnet", -1, 6.5)
        assert s["mouth_motion"] > 0  # still the weight-free mouth measure
