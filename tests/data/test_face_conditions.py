"""Hallo's portrait conditions from fabricated detector outputs, checked against hand computations.

The expected values are written out by hand or computed another way than fada.data.face_conditions does (float
filters instead of OpenCV/PIL where possible), so a change in the arithmetic shows up here.
"""

import sys
import types

import numpy as np
import pytest
import torch

from fada.data import face_conditions as fc
from fada.data.face_analysis import (DETECTION_FILE, LANDMARKER_FILE, RECOGNITION_FILE, HalloFaceAnalysis,
                                     portrait_conditions)
from fada.errors import FadaError, MissingFileError

H = W = 512


def synthetic_landmarks(h=H, w=W):
    """478 landmarks: the unused ones scattered (some far outside the face), the silhouette inside an ellipse whose
    extremes are x 150.4 / 349.6 and y 100.5 / 420.5, the lips inside x 210.2 / 289.7, y 330.5 / 369.5."""
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, min(h, w), (478, 2))
    pts[:5] = [[3.0, 4.0], [w - 2.0, h - 1.0], [0.0, h / 2], [w / 2, 0.0], [w - 1.0, 7.0]]
    sil = list(fc.SILHOUETTE_IDS)
    ang = np.linspace(0, 2 * np.pi, len(sil), endpoint=False)
    pts[sil] = np.column_stack([250 + 90 * np.cos(ang), 260 + 150 * np.sin(ang)])
    pts[[234, 454, 10, 152]] = [[150.4, 260.0], [349.6, 260.0], [250.0, 100.5], [250.0, 420.5]]
    lip = list(fc.LIP_IDS)
    ang = np.linspace(0, 2 * np.pi, len(lip), endpoint=False)
    pts[lip] = np.column_stack([250 + 30 * np.cos(ang), 350 + 15 * np.sin(ang)])
    pts[[61, 291, 0, 17]] = [[210.2, 350.0], [289.7, 350.0], [250.0, 330.5], [250.0, 369.5]]
    return pts


# By hand, Hallo's get_face_mask for synthetic_landmarks at 1.2: np.round gives x 150..350 and y 100..420
# (100.5 -> 100, round half to even); centre x 500//2 = 250, half 200*1.2//2 = 120 -> x 130..370; centre y
# 520//2 = 260, half 320*1.2//2 = 192 -> y 68..452.
FACE_BOX = (130, 370, 68, 452)
# get_lip_mask at 2.0: x 210..290 (210.2, 289.7), y 330..370 (330.5 -> 330, 369.5 -> 370, half to even);
# centre 250, half 80 -> x 170..330; centre 350, half 40 -> y 310..390.
LIP_BOX = (170, 330, 310, 390)


def box_mask(box, h=H, w=W):
    x0, x1, y0, y1 = box
    m = np.zeros((h, w), np.uint8)
    for y in range(max(y0, 0), y1):
        m[y, max(x0, 0):x1] = 255
    return m


def test_expand_region_by_hand():
    # centre 399//2 = 199, side 199*1.2 = 238.8, half 238.8//2 = 119 (the float // floors): x 80..318
    # centre 201//2 = 100, side 101*1.2 = 121.2, half 60: y 40..160
    assert fc.expand_region((100, 299, 50, 151), 512, 512, 1.2) == (80, 318, 40, 160)
    # grown past the top-left corner: shifted right/down, size kept
    assert fc.expand_region((0, 100, 0, 100), 512, 512, 1.5) == (0, 150, 0, 150)
    # grown past the bottom-right: x 450 +- 75 = 375..525, shifted 13 left; y 480 +- 45 = 435..525, 13 up
    assert fc.expand_region((400, 500, 450, 510), 512, 512, 1.5) == (362, 512, 422, 512)
    # wider than the image: shifted left past 0 -> negative minimum (Hallo's quirk, kept)
    assert fc.expand_region((10, 500, 0, 10), 512, 512, 1.2) == (-76, 512, 0, 12)
    assert all(isinstance(v, int) for v in fc.expand_region((10.0, 20.0, 30.0, 40.0), 64, 64, 1.2))


def test_face_and_lip_boxes_by_hand():
    lm = synthetic_landmarks()
    assert np.array_equal(fc.face_region_mask(lm, H, W), box_mask(FACE_BOX))
    assert np.array_equal(fc.lip_region_mask(lm, H, W), box_mask(LIP_BOX))
    # face_expand_ratio 1.0: the rounded extremes themselves, centre rounded down, side 200 / 320
    assert np.array_equal(fc.face_region_mask(lm, H, W, 1.0), box_mask((150, 350, 100, 420)))


def test_box_wider_than_image_fills_only_a_strip():
    # Hallo's quirk: expand_region leaves min_x = -76 and mask[:, -76:512] fills the LAST 76 columns only
    lm = synthetic_landmarks()
    lm[[234, 454]] = [[10.0, 260.0], [500.0, 260.0]]
    m = fc.face_region_mask(lm, H, W)
    cols = np.flatnonzero(m.any(axis=0))
    assert cols[0] == 512 - 76 and cols[-1] == 511


def test_landmarks_are_checked():
    with pytest.raises(FadaError, match="pixel"):
        fc.face_region_mask(np.zeros((68, 2)), H, W)
    bad = synthetic_landmarks()
    bad[10, 0] = np.nan
    with pytest.raises(FadaError, match="NaN"):
        fc.lip_region_mask(bad, H, W)


def float_blur_mask(mask, kernel):
    """Hallo's blur_mask computed in floats without OpenCV: an exact 8x bilinear downscale samples source
    coordinate 8i+3.5 (the mean of pixels 8i+3 and 8i+4), a separable Gaussian with OpenCV's documented
    sigma = 0.3*((k-1)/2 - 1) + 0.8 and reflect-101 borders, then a min-max stretch to 0..255."""
    m = mask.astype(np.float64)
    f = m.shape[0] // 64
    rows = (m[f // 2 - 1::f] + m[f // 2::f]) / 2
    small = (rows[:, f // 2 - 1::f] + rows[:, f // 2::f]) / 2
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    x = np.arange(kernel) - kernel // 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    r = kernel // 2
    padded = np.pad(small, r, mode="reflect")  # numpy's "reflect" is OpenCV's BORDER_REFLECT_101
    tmp = np.stack([np.convolve(row, g, mode="valid") for row in padded])
    out = np.stack([np.convolve(col, g, mode="valid") for col in tmp.T]).T
    return (out - out.min()) / (out.max() - out.min()) * 255


def test_blur_at_64_against_float_computation():
    lm = synthetic_landmarks()
    face, lip = box_mask(FACE_BOX), box_mask(LIP_BOX)
    background, face_sep, lip_blur = fc.separate_masks(fc.face_region_mask(lm, H, W), fc.lip_region_mask(lm, H, W))
    face_blur = fc.blur_mask(face, fc.FACE_BLUR_KERNEL)
    for got, want in ((face_blur, float_blur_mask(face, 51)), (lip_blur, float_blur_mask(lip, 31))):
        assert got.shape == (64, 64) and got.dtype == np.uint8
        assert got.min() == 0 and got.max() == 255
        # OpenCV's 8-bit blur uses a fixed-point kernel (up to ~1.5 off), and the stretch magnifies that by up to
        # 255/167 here; a kernel 8 wider is already 15 off
        assert np.abs(got.astype(float) - want).max() <= 3
    # face minus lip, saturating at 0
    assert np.array_equal(face_sep, np.clip(face_blur.astype(int) - lip_blur.astype(int), 0, 255))
    # background: Hallo's (1 - v/255)*255 truncated to uint8, not 255 - v (see the next test)
    table = np.array([int((1.0 - v / 255.0) * 255) for v in range(256)])
    assert np.array_equal(background, table[face_blur])


def test_background_truncation_quirk():
    table = np.array([int((1.0 - v / 255.0) * 255) for v in range(256)])
    off = np.flatnonzero(table != 255 - np.arange(256))
    assert len(off) == 50 and off[0] == 43 and table[43] == 211
    assert np.all(table[off] == 254 - off)
    face = np.zeros((64, 64), np.uint8)
    face[:, :32] = 255   # blur_mask at 64x64 with a half-plane gives every value from 0 to 255
    bg, _, _ = fc.separate_masks(face, np.zeros_like(face))
    blurred = fc.blur_mask(face, 51)
    assert np.array_equal(bg, table[blurred]) and (bg != 255 - blurred).any()


def test_empty_mask_blurs_to_zeros():
    zero = np.zeros((H, W), np.uint8)
    assert not fc.blur_mask(zero, 31).any()


def pil_bilinear(img, out):
    """PIL's bilinear resample as its documentation describes it: a triangle filter stretched by the downscale
    factor (hence antialiased), taps renormalised at the borders; separable, in floats."""
    def weights(n_in, n_out):
        s = n_in / n_out
        wts = np.zeros((n_out, n_in))
        for i in range(n_out):
            centre = (i + 0.5) * s
            j = np.arange(n_in)
            wts[i] = np.clip(1 - np.abs(j + 0.5 - centre) / max(s, 1.0), 0, None)
            wts[i] /= wts[i].sum()
        return wts
    a = img.astype(np.float64)
    a = np.tensordot(weights(a.shape[0], out), a, axes=(1, 0))
    return np.tensordot(a, weights(a.shape[1], out).T, axes=(1, 0))


def test_attention_levels_sizes_flattening_and_antialias():
    rng = np.random.default_rng(3)
    mask64 = np.kron(rng.integers(0, 2, (16, 16)), np.ones((4, 4))).astype(np.uint8) * 255  # hard edges
    levels = fc.attention_masks(mask64, 512)
    assert [tuple(t.shape) for t in levels] == [(1, 4096), (1, 1024), (1, 256), (1, 64)]
    assert all(t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1 for t in levels)
    # level 0 is the 64x64 mask itself, flattened row by row
    assert torch.equal(levels[0][0], torch.tensor(mask64.reshape(-1) / 255.0, dtype=torch.float32))
    assert levels[0][0, 5 * 64 + 7] == mask64[5, 7] / 255.0
    for t, side in zip(levels[1:], (32, 16, 8)):
        want = pil_bilinear(mask64, side) / 255
        assert np.abs(t.view(side, side).numpy() - want).max() <= 1.01 / 255
        # a plain 2-tap bilinear (OpenCV's INTER_LINEAR, no antialias) is not what Hallo's transforms do
        import cv2
        naive = cv2.resize(mask64, (side, side), interpolation=cv2.INTER_LINEAR) / 255
        assert np.abs(naive - want).max() > 0.05
    small = fc.attention_masks(mask64, 256)
    assert [tuple(t.shape) for t in small] == [(1, 1024), (1, 256), (1, 64), (1, 16)]


def test_face_locator_mask():
    face = box_mask(FACE_BOX)
    fm = fc.face_locator_mask(face, 512)
    assert tuple(fm.shape) == (3, 512, 512) and fm.dtype == torch.float32
    assert torch.equal(fm[0], torch.tensor(face / 255.0, dtype=torch.float32))
    assert torch.equal(fm[0], fm[1]) and torch.equal(fm[1], fm[2])
    big = np.kron(face, np.ones((2, 2), np.uint8))  # the same portrait at 1024: downscaled with antialias
    fm2 = fc.face_locator_mask(big, 512)
    assert np.abs(fm2[1].numpy() - pil_bilinear(big, 512) / 255).max() <= 1.01 / 255


def face(box, seed=0):
    return {"bbox": np.array(box, np.float32), "embedding": np.random.default_rng(seed).normal(0, 8, 512)}


def test_largest_face_and_zero_fallback():
    faces = [face((0, 0, 10, 10), 0), face((100, 100, 160, 150), 1), face((0, 0, 50, 50), 2)]  # areas 100/3000/2500
    assert fc.select_face(faces) == 1
    emb, found = fc.face_embedding(faces)
    assert found and emb.dtype == torch.float32 and tuple(emb.shape) == (512,)
    # the raw embedding (InsightFace's .embedding), not L2-normalised
    assert torch.equal(emb, torch.tensor(faces[1]["embedding"], dtype=torch.float32))
    tie = [face((0, 0, 60, 50), 5), face((10, 10, 60, 70), 6)]   # both 3000: the first wins
    assert fc.select_face(tie) == 0
    objs = [types.SimpleNamespace(bbox=[0, 0, 5, 5], embedding=np.ones(512)),
            types.SimpleNamespace(bbox=[0, 0, 9, 9], embedding=np.full(512, 2.0))]
    assert fc.face_embedding(objs)[0][0] == 2.0
    emb, found = fc.face_embedding([])
    assert not found and torch.equal(emb, torch.zeros(512))
    with pytest.raises(FadaError, match="512"):
        fc.face_embedding([{"bbox": [0, 0, 1, 1], "embedding": np.zeros(128)}])
    with pytest.raises(FadaError, match="no embedding"):
        fc.face_embedding([{"bbox": [0, 0, 1, 1]}])


@pytest.fixture(scope="module")
def conditions():
    faces = [face((200, 120, 300, 420), 7), face((10, 10, 40, 40), 8)]
    return fc.build_conditions(faces, synthetic_landmarks(), H, W), faces


def test_build_conditions(conditions):
    c, faces = conditions
    assert c.size == 512 and c.face_found
    assert torch.equal(c.face_emb, torch.tensor(faces[0]["embedding"], dtype=torch.float32))
    assert torch.equal(c.face_mask[0], torch.tensor(box_mask(FACE_BOX) / 255.0, dtype=torch.float32))
    for masks in (c.full_masks, c.face_masks, c.lip_masks):
        assert [tuple(m.shape) for m in masks] == [(1, 4096), (1, 1024), (1, 256), (1, 64)]
        assert all(0 <= float(m.min()) and float(m.max()) <= 1 for m in masks)
    full, face_m, lip = (m[0].view(64, 64) * 255 for m in (c.full_masks[0], c.face_masks[0], c.lip_masks[0]))
    face_blur = torch.tensor(fc.blur_mask(box_mask(FACE_BOX), 51), dtype=torch.float32)
    lip_blur = torch.tensor(fc.blur_mask(box_mask(LIP_BOX), 31), dtype=torch.float32)
    assert torch.allclose(lip, lip_blur, atol=1e-3)
    assert torch.allclose(face_m, (face_blur - lip_blur).clamp(min=0), atol=1e-3)
    s = (full + face_blur).round()
    assert bool(((s == 255) | (s == 254)).all())   # 255 - v, or one less where the truncation quirk bites
    # the face centre is face, the far corner background, the mouth lip
    assert full[0, 0] > 250 and face_m[32, 32] > 200 and lip[43, 31] > 200 and full[32, 32] < 5


def test_for_clip_shapes(conditions):
    c, _ = conditions
    b = c.for_clip(16)
    assert tuple(b["face_emb"].shape) == (1, 512) and tuple(b["face_mask"].shape) == (1, 3, 512, 512)
    for kind in ("full", "face", "lip"):
        masks = b[f"pixel_values_{kind}_mask"]
        assert [tuple(m.shape) for m in masks] == [(16, 4096), (16, 1024), (16, 256), (16, 64)]
        assert torch.equal(masks[2][9], getattr(c, f"{kind}_masks")[2][0])


def test_no_face_found_still_builds_masks():
    c = fc.build_conditions([], synthetic_landmarks(), H, W, size=256)
    assert not c.face_found and not c.face_emb.any()
    assert [tuple(m.shape) for m in c.lip_masks] == [(1, 1024), (1, 256), (1, 64), (1, 16)]
    assert tuple(c.face_mask.shape) == (3, 256, 256)


def test_size_must_suit_the_attention_levels():
    with pytest.raises(FadaError, match="multiple of 64"):
        fc.build_conditions([], synthetic_landmarks(), H, W, size=500)


def test_save_load_round_trip(conditions, tmp_path):
    c, _ = conditions
    path = c.save(tmp_path / "cache" / "ref.conditions.safetensors")
    back = fc.PortraitConditions.load(path)
    assert back.face_found and back.size == 512
    for k, v in c.tensors().items():
        assert torch.equal(back.tensors()[k], v), k
    empty = fc.build_conditions([], synthetic_landmarks(), H, W, size=128)
    assert not fc.PortraitConditions.load(empty.save(tmp_path / "e.safetensors")).face_found
    with pytest.raises(MissingFileError):
        fc.PortraitConditions.load(tmp_path / "absent.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(FadaError, match="not a portrait conditions file"):
        fc.PortraitConditions.load(tmp_path / "other.safetensors")
    with pytest.raises(FadaError, match="face_mask"):
        fc.PortraitConditions(c.face_emb, c.face_mask[:1], c.full_masks, c.face_masks, c.lip_masks)


# --- detector loaders ------------------------------------------------------------------------------------------

def model_folder(tmp_path, files=(LANDMARKER_FILE, DETECTION_FILE, RECOGNITION_FILE)):
    d = tmp_path / "face_analysis" / "models"
    d.mkdir(parents=True)
    for name in files:
        (d / name).write_bytes(b"")
    return d


def test_missing_folder_and_files(tmp_path):
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(MissingFileError, match="face-analysis folder"):
        portrait_conditions(img, tmp_path / "nowhere")
    d = model_folder(tmp_path, files=(LANDMARKER_FILE,))
    with pytest.raises(MissingFileError) as e:
        portrait_conditions(img, d)
    assert DETECTION_FILE in str(e.value) and "\n" not in str(e.value)
    (d / LANDMARKER_FILE).unlink()
    with pytest.raises(MissingFileError, match=LANDMARKER_FILE):
        portrait_conditions(img, d.parent)   # the face_analysis folder is accepted for its models/


def test_missing_packages_one_line(tmp_path, monkeypatch):
    d = model_folder(tmp_path)
    for mod in ("mediapipe", "insightface", "insightface.app", "onnxruntime"):
        monkeypatch.setitem(sys.modules, mod, None)   # import raises ImportError
    with pytest.raises(FadaError) as e:
        portrait_conditions(np.zeros((64, 64, 3), np.uint8), d)
    msg = str(e.value)
    assert "pip install 'fada[hallo]'" in msg and "\n" not in msg and not isinstance(e.value, MissingFileError)


def fake_detectors(monkeypatch, landmarks_norm, faces, calls):
    """Stand-ins for mediapipe and insightface.app with their call shapes; they record what they were given."""
    mp = types.ModuleType("mediapipe")
    mp.ImageFormat = types.SimpleNamespace(SRGB="srgb")
    mp.Image = lambda image_format, data: types.SimpleNamespace(format=image_format, data=data)

    class FaceLandmarker:
        @staticmethod
        def create_from_options(options):
            calls["landmarker_options"] = options
            return FaceLandmarker()

        def detect(self, image):
            calls["landmarker_image"] = image
            pts = [types.SimpleNamespace(x=float(x), y=float(y)) for x, y in landmarks_norm]
            return types.SimpleNamespace(face_landmarks=[pts] if pts else [])

        def close(self):
            calls["closed"] = True

    mp.tasks = types.SimpleNamespace(
        BaseOptions=lambda model_asset_path: types.SimpleNamespace(model_asset_path=model_asset_path),
        vision=types.SimpleNamespace(FaceLandmarker=FaceLandmarker, RunningMode=types.SimpleNamespace(IMAGE="image"),
                                     FaceLandmarkerOptions=lambda **kw: kw))

    class FaceAnalysis:
        def __init__(self, **kw):
            calls["face_analysis"] = kw

        def prepare(self, **kw):
            calls["prepare"] = kw

        def get(self, img):
            calls["insightface_image"] = img
            return faces

    app = types.ModuleType("insightface.app")
    app.FaceAnalysis = FaceAnalysis
    monkeypatch.setitem(sys.modules, "mediapipe", mp)
    monkeypatch.setitem(sys.modules, "insightface", types.ModuleType("insightface"))
    monkeypatch.setitem(sys.modules, "insightface.app", app)
    monkeypatch.setitem(sys.modules, "onnxruntime", types.ModuleType("onnxruntime"))


def test_portrait_conditions_wires_the_detectors(tmp_path, monkeypatch):
    d = model_folder(tmp_path)
    h, w = 480, 512
    lm = synthetic_landmarks(h, w)
    norm = lm / [w, h]
    faces = [face((100, 100, 300, 380), 4)]
    calls = {}
    fake_detectors(monkeypatch, norm, faces, calls)
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    got = portrait_conditions(img, d)
    # same as the pure function on pixel landmarks x*w, y*h
    want = fc.build_conditions(faces, norm * [w, h], h, w)
    for k, v in want.tensors().items():
        assert torch.equal(got.tensors()[k], v), k
    assert calls["landmarker_options"]["running_mode"] == "image"
    assert calls["landmarker_options"]["base_options"].model_asset_path == str(d / LANDMARKER_FILE)
    assert calls["landmarker_image"].format == "srgb" and np.array_equal(calls["landmarker_image"].data, img)
    assert np.array_equal(calls["insightface_image"], img[:, :, ::-1])   # InsightFace gets BGR
    fa = calls["face_analysis"]
    assert fa["name"] == str(d.resolve()) and fa["providers"] == ["CPUExecutionProvider"]
    assert calls["prepare"]["det_size"] == (640, 640) and calls.get("closed")


def test_no_landmarks_is_a_user_error(tmp_path, monkeypatch):
    calls = {}
    fake_detectors(monkeypatch, [], [], calls)
    with HalloFaceAnalysis(model_folder(tmp_path)) as analysis:
        with pytest.raises(FadaError, match="no face landmarks"):
            analysis(np.zeros((64, 64, 3), np.uint8))
        with pytest.raises(FadaError, match="uint8 RGB"):
            analysis(np.zeros((64, 64), np.float32))
