"""The labelled synthetic corpus: real mp4s whose faces Haar finds, whose mouths follow the audio, and whose
defects are what labels.json says. Everything here is measured from the decoded files, not from the generator."""

import json

import cv2
import numpy as np
import pytest

from fada.data import synthetic as S
from fada.data.media import read_audio_track, read_video, video_info

SR, FPS = 16000, 25
CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    labels = S.generate_corpus(out, count=10, size=128, seed=5, defect_fraction=0.5, seconds=(1.6, 2.0), workers=1,
                               progress=False)
    clips = {}
    for lab in labels:
        frames, fps = read_video(out / lab["file"])
        clips[lab["clip"]] = (frames, fps, read_audio_track(out / lab["file"], SR))
    return out, labels, clips


def kind(lab):
    return lab["defects"][0] if lab["defects"] else "clean"


def detections(frames):
    return [CASCADE.detectMultiScale(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(30, 30)) for f in frames]


def audio_rms(audio, n):
    hop = SR // FPS
    return np.array([np.sqrt(np.mean(audio[k * hop:(k + 1) * hop] ** 2)) for k in range(n)])


def mouth_darkness(frames):
    """Mean darkness of the lower-middle of the median Haar face box (where a mouth sits)."""
    boxes = np.array([d[0] for d in detections(frames) if len(d)])
    x, y, w, h = np.median(boxes, axis=0).astype(int)
    region = frames[:, y + int(0.68 * h):y + int(0.95 * h), x + int(0.3 * w):x + int(0.7 * w)]
    return 255.0 - region.astype(np.float64).mean(axis=(1, 2, 3))


def lagged_corr(a, b, lag):
    """corr(a[t], b[t + lag])."""
    if lag > 0:
        a, b = a[:-lag], b[lag:]
    elif lag < 0:
        a, b = a[-lag:], b[:lag]
    return np.corrcoef(a, b)[0, 1]


def test_files_and_labels(corpus):
    out, labels, clips = corpus
    assert json.loads((out / "labels.json").read_text()) == labels
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"clip_{i:04d}.mp4" for i in range(10)]
    assert {kind(lab) for lab in labels} == set(S.DEFECTS) | {"clean"}
    for lab in labels:
        info = video_info(out / lab["file"])
        assert info.has_audio and (info.width, info.height, info.fps) == (128, 128, 25.0)
        frames, fps, audio = clips[lab["clip"]]
        assert len(frames) == lab["frames"] and 1.6 <= lab["seconds"] <= 2.0
        assert abs(len(audio) / SR - lab["seconds"]) < 0.07
        if kind(lab) == "out_of_sync":
            assert 8 <= abs(lab["sync_shift_frames"]) <= 15
        else:
            assert lab["sync_shift_frames"] == 0
        assert (lab["identity"] is None) == (kind(lab) == "no_face")


def test_plan_covers_every_defect_for_a_modest_count():
    plan = S.plan_corpus(count=12, seed=1)
    assert {d for lab in plan for d in lab["defects"]} == set(S.DEFECTS)
    assert sum(not lab["defects"] for lab in plan) == 12 - round(12 * 0.4)
    assert S.plan_corpus(count=12, seed=1) == plan and S.plan_corpus(count=12, seed=2) != plan
    json.dumps(plan)  # serialisable


def test_same_seed_same_corpus_any_worker_count(corpus, tmp_path):
    _, labels, clips = corpus
    again = S.generate_corpus(tmp_path, count=10, size=128, seed=5, defect_fraction=0.5, seconds=(1.6, 2.0),
                              workers=2, progress=False)
    assert again == labels
    for lab in labels[:4]:
        frames, _ = read_video(tmp_path / lab["file"])
        assert np.array_equal(frames, clips[lab["clip"]][0])
        assert np.array_equal(read_audio_track(tmp_path / lab["file"], SR), clips[lab["clip"]][2])


def test_haar_finds_clean_faces_and_nothing_in_no_face_clips(corpus):
    _, labels, clips = corpus
    rate = {}
    for lab in labels:
        dets = detections(clips[lab["clip"]][0])
        rate.setdefault(kind(lab), []).extend(len(d) > 0 for d in dets)
    assert np.mean(rate["clean"]) >= 0.9
    assert np.mean(rate["no_face"]) <= 0.05


def test_mouth_follows_the_audio_only_when_in_sync(corpus):
    _, labels, clips = corpus
    for lab in labels:
        if kind(lab) in ("no_face", "blur", "shaky"):
            continue
        frames, _, audio = clips[lab["clip"]]
        dark, rms = mouth_darkness(frames), audio_rms(audio, len(frames))
        c0 = lagged_corr(dark, rms, 0)
        if kind(lab) == "clean":
            assert c0 > 0.7, (lab["clip"], c0)
        elif kind(lab) == "out_of_sync":
            assert abs(c0) < 0.4, c0
            assert lagged_corr(dark, rms, lab["sync_shift_frames"]) > 0.7
        elif kind(lab) == "static":
            assert abs(c0) < 0.4 and dark.std() < 2.0


def test_blur_and_shake_are_measurable(corpus):
    _, labels, clips = corpus

    def sharpness(frames):
        return np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in frames])

    def corner_motion(frames):  # background-only corner: still unless the camera moves
        c = frames[:, :24, :24].astype(np.float64)
        return np.abs(np.diff(c, axis=0)).mean()

    by = {kind(lab): clips[lab["clip"]][0] for lab in labels}
    assert sharpness(by["blur"]) < 0.3 * sharpness(by["clean"])
    assert corner_motion(by["shaky"]) > 4 * corner_motion(by["clean"]) + 1.0


def test_renderer_api_for_ground_truth():
    rng = np.random.default_rng(3)
    ident = S.sample_identity(rng)
    json.dumps(ident)
    audio = S.synth_speech(1.2, rng, pitch=ident["pitch"])
    assert audio.dtype == np.float32 and len(audio) == int(1.2 * SR) and np.abs(audio).max() <= 1.0
    a = S.render_clip(ident, audio, fps=FPS, size=96, seed=4)
    assert a.shape == (30, 96, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, S.render_clip(ident, audio, fps=FPS, size=96, seed=4))
    open_ = S.mouth_opening(audio, FPS, SR)
    assert open_.shape == (30,) and 0 <= open_.min() and open_.max() <= 1 and open_.max() > 0.5


def test_hold_pose_keeps_the_head_and_draws_the_mouth():
    """``hold_pose``: the same first frame as the clip; afterwards the head stays where it was (the top rows, hair
    and background, do not change) while the truth's sway moves them, and the mouth still follows the audio."""
    rng = np.random.default_rng(5)
    ident = S.sample_identity(rng)
    audio = S.synth_speech(3.0, rng, pitch=ident["pitch"])
    truth = S.render_clip(ident, audio, fps=FPS, size=64, seed=9).astype(np.float64)
    held = S.render_clip(ident, audio, fps=FPS, size=64, seed=9, hold_pose=True).astype(np.float64)
    assert np.array_equal(held[0], truth[0])
    top = slice(0, 20)  # hair and background above the eyes
    assert np.abs(held[:, top] - held[:1, top]).max() == 0
    assert np.abs(truth[:, top] - truth[:1, top]).mean() > 0.5
    mouth = (slice(38, 52), slice(22, 42))
    change = np.abs(held[:, mouth[0], mouth[1]] - held[:1, mouth[0], mouth[1]]).mean(axis=(1, 2, 3))
    opening = S.mouth_opening(audio, FPS, SR)[:len(change)]
    assert np.corrcoef(change, np.abs(opening - opening[0]))[0, 1] > 0.8


def test_speech_has_pitch_and_pauses():
    rng = np.random.default_rng(0)
    audio = S.synth_speech(4.0, rng, pitch=120.0)
    rms = S.frame_rms(audio)
    assert (rms < 0.1 * rms.max()).mean() > 0.1  # pauses
    assert (rms > 0.3 * rms.max()).mean() > 0.3  # voiced
    k = int(np.argmax(rms))  # the loudest frame: its period is near the requested pitch
    seg = audio[k * 640:(k + 1) * 640].astype(np.float64)
    ac = np.correlate(seg, seg, "full")[len(seg) - 1:]
    lag = np.argmax(ac[SR // 300:SR // 60]) + SR // 300
    assert 0.75 * 120 < SR / lag < 1.3 * 120
    spec = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    assert spec[freqs < 4000].sum() > 0.9 * spec.sum()
