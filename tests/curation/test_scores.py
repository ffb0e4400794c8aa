"""Pure curation scores and track segmentation, checked on arrays with known answers."""

import cv2
import numpy as np
import pytest

from fada.curation import scores as S


def _texture(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (n // 4, n // 4), dtype=np.uint8), (n, n), interpolation=cv2.INTER_CUBIC)


def test_sharpness_drops_with_blur_and_brightness_is_mean():
    img = _texture()
    blurred = cv2.GaussianBlur(img, (0, 0), 2.0)
    assert S.sharpness(img) > 5 * S.sharpness(blurred)
    assert S.sharpness(np.full((32, 32), 90, np.uint8)) == 0.0
    assert S.brightness(np.full((8, 8), 90, np.uint8)) == 90.0


def test_face_patch_is_resolution_independent():
    # the same face region at 1x and 2x source resolution reads about the same sharpness
    img = _texture(128)
    big = cv2.resize(img, (256, 256), interpolation=cv2.INTER_CUBIC)
    a = S.sharpness(S.face_patch(np.dstack([img] * 3), (32, 32, 64, 64)))
    b = S.sharpness(S.face_patch(np.dstack([big] * 3), (64, 64, 128, 128)))
    assert S.face_patch(img, (32, 32, 64, 64)).shape == (S.ANALYSIS_SIZE, S.ANALYSIS_SIZE)
    assert a == pytest.approx(b, rel=0.35)


def test_person_mask_and_background_motion():
    mask = S.person_mask((100, 100), (40, 20, 20, 20), margin=0.5)
    # face box grown by 10 px each side -> x 30..70 from y 10 down to the bottom is the person
    assert not mask[10:, 30:70].any()
    assert mask[:10].all() and mask[:, :30].all() and mask[:, 70:].all()
    half = S.person_mask((50, 50), (40, 20, 20, 20), margin=0.5, scale=0.5)
    assert not half[5:, 15:35].any() and half[:, :15].all()
    a = np.zeros((100, 100), np.float32)
    b = a.copy()
    b[50:, 40:60] = 200  # change only inside the person region
    assert S.background_motion(a, b, mask) == 0.0
    b[0:10, 0:10] = 100  # a change in the background
    assert S.background_motion(a, b, mask) == pytest.approx(100 * 100 / mask.sum())
    assert S.background_motion(a, b, np.zeros_like(mask)) is None


def test_bg_frame_reduces_width():
    small, s = S.bg_frame(np.zeros((720, 1280, 3), np.uint8))
    assert small.shape == (90, 160) and s == pytest.approx(0.125)
    same, s1 = S.bg_frame(np.zeros((64, 96, 3), np.uint8))
    assert same.shape == (64, 96) and s1 == 1.0


def test_head_motion_known_value():
    # centre moves 2 px per detection, detections 5 frames apart, box 40 px: 2 / 40 / 5 = 0.01 per frame
    idx = [0, 5, 10]
    boxes = np.array([[10, 10, 40, 40], [12, 10, 40, 40], [14, 10, 40, 40]], float)
    assert S.head_motion(idx, boxes) == pytest.approx(0.01)
    assert S.head_motion([0], boxes[:1]) == 0.0


def test_mouth_box_in_crop():
    assert S.mouth_box_in_crop(0.0) == pytest.approx(S.MOUTH_IN_FACE)
    # margin 0.5: the face occupies the middle half of the crop
    x0, y0, x1, y1 = S.mouth_box_in_crop(0.5)
    assert x0 == pytest.approx(0.25 + 0.5 * S.MOUTH_IN_FACE[0]) and y1 == pytest.approx(0.25 + 0.5 * S.MOUTH_IN_FACE[3])


@pytest.mark.parametrize("k", [0, 3, -4])
def test_weight_free_sync_recovers_offset_in_a_face_crop(k):
    """A dark mouth opening where the mouth box of a margin-0.4 crop is; audio loudness follows it k frames late."""
    rng = np.random.default_rng(5)
    n, fps, sr, size = 100, 25, 16000, 64
    raw = np.convolve(rng.random(n + 40), np.ones(4) / 4, mode="same")
    opening, loud = raw[20:20 + n], raw[20 - k:20 - k + n]
    x0, y0, x1, y1 = (int(v * size) for v in S.mouth_box_in_crop(0.4))
    frames = np.full((n, size, size, 3), 170, np.uint8)
    cy = (y0 + y1) // 2
    for t in range(n):
        h = int(round(1 + 8 * opening[t]))
        frames[t, cy - h // 2:cy + (h + 1) // 2, x0 + 3:x1 - 3] = 30
    audio = rng.standard_normal(n * sr // fps) * np.repeat(loud, sr // fps)
    res = S.weight_free_sync(frames, audio, sr, fps, margin=0.4)
    assert res["offset"] == k and res["method"] == "weight_free"
    assert res["confidence"] > 0.35 and res["mouth_motion"] > 0


def test_face_segments_gaps_and_jumps():
    box = [10, 10, 40, 40]
    idx = list(range(0, 100, 5))
    assert S.face_segments(idx, [None] * len(idx), 100, 5, 12) == []
    # two misses in a row (0.4 s at 25 fps) are within a 12-frame gap: one segment
    boxes = [box] * len(idx)
    boxes[6] = boxes[7] = None
    assert S.face_segments(idx, boxes, 100, 5, 12) == [(0, 98)]
    # three misses (0.6 s) split it
    boxes[8] = None
    assert S.face_segments(idx, boxes, 100, 5, 12) == [(0, 28), (43, 98)]
    # a detection far away (another face, a false hit) splits too
    boxes = [box] * len(idx)
    boxes[10] = [70, 70, 40, 40]
    segs = S.face_segments(idx, boxes, 100, 5, 12)
    assert segs == [(0, 48), (48, 53), (53, 98)]
    # a box twice as large is not the same face either
    boxes = [box] * len(idx)
    boxes[10] = [0, 0, 100, 100]
    assert len(S.face_segments(idx, boxes, 100, 5, 12)) == 3


@pytest.mark.parametrize("n", [49, 50, 130, 250, 251, 1000])
def test_slice_segment_lengths(n):
    pieces = S.slice_segment(10, 10 + n, 50, 250)
    if n < 50:
        assert pieces == []
        return
    assert pieces[0][0] == 10 and all(50 <= e - s <= 250 for s, e in pieces)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # contiguous
    if n <= 250:
        assert pieces == [(10, 10 + n)]
    else:
        assert pieces[-1][1] == 10 + n  # equal parts cover the whole segment


def test_slice_segment_greedy_when_equal_parts_too_short():
    # min 2 s, max 3 s at 25 fps, a 3.2 s track: halves (1.6 s) are too short -> one 3 s clip, remainder dropped
    assert S.slice_segment(0, 80, 50, 75) == [(0, 75)]


def test_nearest_source_index():
    assert [S.nearest_source_index(k, 25, 25) for k in range(4)] == [0, 1, 2, 3]
    # 30 fps -> 25 fps: output k at k/25 s is nearest source frame round(k * 1.2)
    assert [S.nearest_source_index(k, 30, 25) for k in range(6)] == [0, 1, 2, 4, 5, 6]
    # 12.5 fps -> 25 fps repeats frames
    assert [S.nearest_source_index(k, 12.5, 25) for k in range(5)] == [0, 1, 1, 2, 2]


def test_choose_track_prefers_the_persistent_face():
    face, false_hit = [80, 30, 55, 55], [147, 64, 65, 65]
    moving = [[80 + t, 30, 55, 55] for t in range(6)]
    cands = [[moving[0]], [moving[1]], [false_hit, moving[2]], [false_hit, moving[3]], [moving[4]], []]
    chosen = S.choose_track(cands, max_skip=2)
    assert chosen[:5] == moving[:5] and chosen[5] is None
    assert S.choose_track([[face, false_hit]], max_skip=2) == [false_hit]  # one frame: the largest
    # a track broken by more than max_skip missed frames starts again
    gap = [[face], [], [], [], [face], [face]]
    assert S.choose_track(gap, max_skip=2) == [face, None, None, None, face, face]
    # two people: each frame keeps the longer-lived one
    other = [200, 40, 50, 50]
    two = [[face], [face, other], [face, other], [other]]
    assert S.choose_track(two, max_skip=1) == [face, face, face, other]
