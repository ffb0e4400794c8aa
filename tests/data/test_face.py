import numpy as np
import pytest
from skimage import data

from fada.data.face import Box, FaceDetector, crop_square, smooth_boxes, to_rgb


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_haar_finds_the_astronaut(astronaut, detector):
    box = detector.detect(astronaut)
    assert box is not None
    cx, cy = box.center
    # the face in skimage's astronaut portrait sits around x≈220, y≈110 (512x512 image)
    assert 180 < cx < 260 and 70 < cy < 160 and 60 < box.size < 160


@pytest.mark.parametrize("kind", ["rgba", "gray"])
def test_other_image_modes(astronaut, detector, kind):
    img = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)]) if kind == "rgba" \
        else astronaut.mean(axis=2).astype(np.uint8)
    assert detector.detect(img) is not None
    assert to_rgb(img).shape == astronaut.shape


def test_no_face_in_noise(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((200, 200, 3), 128, np.uint8)) is None
    assert detector.detect(rng.integers(0, 20, (64, 64, 3), dtype=np.uint8)) is None


def test_crop_square_geometry():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:60] = 255  # a 20 px "face"
    crop = crop_square(img, Box(40, 40, 20, 20), margin=0.5, size=40)
    assert crop.shape == (40, 40, 3)
    # margin 0.5 each side → the face covers the middle half of the crop
    assert crop[20, 20].min() > 200 and crop[2, 2].max() < 50
    # a box hanging over the border is padded, not shrunk
    assert crop_square(img, Box(-10, -10, 30, 30), margin=0.2, size=16).shape == (16, 16, 3)


def test_smooth_boxes_interpolates_gaps_and_rejects_outliers():
    boxes = [Box(10, 10, 20, 20), None, Box(14, 10, 20, 20), Box(90, 90, 5, 5), Box(14, 10, 20, 20)]
    arr, found = smooth_boxes(boxes, window=3)
    assert found.tolist() == [True, False, True, True, True]
    assert arr[1, 0] == pytest.approx(12)  # interpolated, then median with its neighbours
    assert arr[3, 0] == pytest.approx(14)  # the outlier at t=3 is voted out
    empty, mask = smooth_boxes([None, None])
    assert not mask.any() and empty.shape == (2, 4)


def test_opencv_without_haar_cascades_is_a_one_line_error(monkeypatch):
    """OpenCV 5 dropped CascadeClassifier: the error names the fix instead of an AttributeError."""
    import cv2

    from fada.errors import FadaError

    monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(FadaError, match=r"opencv-python-headless<5.*--no-crop"):
        FaceDetector()
