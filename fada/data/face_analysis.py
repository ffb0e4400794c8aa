"""Hallo's two face detectors, loaded from the user's Hallo folder, and :func:`portrait_conditions`.

Hallo (commit 8fd7c57) runs InsightFace's ``FaceAnalysis`` for the identity embedding
(``hallo/datasets/image_processor.py`` ``ImageProcessor``) and MediaPipe's FaceLandmarker for the mask landmarks
(``hallo/utils/util.py`` ``get_landmark``), both from ``pretrained_models/face_analysis/models/``. The packages
are optional (extra ``hallo``) and imported only when a detector is built; everything after detection is the
pure code of :mod:`fada.data.face_conditions`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from fada.data.face_conditions import FACE_EXPAND_RATIO, IMAGE_SIZE, PortraitConditions, build_conditions
from fada.errors import FadaError, MissingFileError

LANDMARKER_FILE = "face_landmarker_v2_with_blendshapes.task"
DETECTION_FILE = "scrfd_10g_bnkps.onnx"     # InsightFace antelopev2's SCRFD detector, as Hallo's README lists
RECOGNITION_FILE = "glintr100.onnx"         # its ArcFace recognition net (the 512-d embedding)
INSTALL_HINT = "pip install 'fada[hallo]'"
MODEL_FILES = ((LANDMARKER_FILE, "MediaPipe face landmarker"), (DETECTION_FILE, "InsightFace face detector"),
               (RECOGNITION_FILE, "InsightFace recognition model"))
DET_SIZE = (640, 640)                       # ImageProcessor: face_analysis.prepare(det_size=(640, 640))


def models_folder(models_dir) -> Path:
    """Hallo's ``pretrained_models/face_analysis/models`` folder; its parent ``face_analysis`` is accepted too."""
    p = Path(models_dir).expanduser()
    if not p.is_dir():
        raise MissingFileError(p, "Hallo face-analysis folder", "expected pretrained_models/face_analysis/models")
    if not (p / LANDMARKER_FILE).exists() and (p / "models").is_dir():
        p = p / "models"
    return p


def require_file(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise MissingFileError(path, what, "from Hallo's pretrained_models/face_analysis/models")
    return path


def import_optional(module: str):
    """Import one of the ``hallo`` extra's packages, or fail with one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise FadaError(f"Hallo's face conditions need insightface, mediapipe and onnxruntime ({module}: {e}); "
                        f"install them with: {INSTALL_HINT}") from None


def check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FadaError(f"portrait must be a uint8 RGB array (H, W, 3), got {img.dtype} {img.shape} "
                        "(fada.data.portrait.read_portrait reads any image file as such)")
    return np.ascontiguousarray(img)


class FaceEmbedder:
    """InsightFace ``FaceAnalysis`` on CPU with det_size 640, as ``ImageProcessor.__init__`` builds it.

    Hallo passes ``name=""`` and ``root=pretrained_models/face_analysis`` so InsightFace reads
    ``root/models/``; here the folder's absolute path is passed as ``name``, which both the 0.7 line
    (``os.path.join`` keeps an absolute last part) and later releases (a folder given as name is used directly;
    there ``name=""`` would mean the working directory) resolve to the same folder. Only the detection and
    recognition models are loaded: the embedding depends on nothing else (the landmark and gender-age models
    Hallo also loads only add unused attributes).
    """

    def __init__(self, models_dir):
        folder = models_folder(models_dir)
        for name, what in MODEL_FILES[1:]:
            require_file(folder, name, what)
        app = import_optional("insightface.app")
        import_optional("onnxruntime")
        self.app = app.FaceAnalysis(name=str(folder.resolve()), root=str(folder.resolve().parent),
                                    providers=["CPUExecutionProvider"], allowed_modules=["detection", "recognition"])
        self.app.prepare(ctx_id=-1, det_size=DET_SIZE)

    def __call__(self, image_rgb: np.ndarray) -> list:
        """InsightFace faces of a uint8 RGB image (given to InsightFace as BGR, as Hallo converts it)."""
        img = check_image(image_rgb)
        return list(self.app.get(np.ascontiguousarray(img[:, :, ::-1])))

    def close(self):
        self.app = None


class Landmarker:
    """MediaPipe FaceLandmarker from ``face_landmarker_v2_with_blendshapes.task`` in IMAGE mode, as util.py
    ``get_landmark`` builds it (default options: at most one face)."""

    def __init__(self, models_dir):
        task = require_file(models_folder(models_dir), *MODEL_FILES[0])
        mp = import_optional("mediapipe")
        self.mp = mp
        vision = mp.tasks.vision
        options = vision.FaceLandmarkerOptions(base_options=mp.tasks.BaseOptions(model_asset_path=str(task)),
                                               running_mode=vision.RunningMode.IMAGE)
        self.landmarker = vision.FaceLandmarker.create_from_options(options)

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """(N, 2) float64 landmarks in pixels, ``(x * width, y * height)`` as util.py ``compute_face_landmarks``;
        None unless exactly one face is found (Hallo then prints "#face is invalid" and fails)."""
        img = check_image(image_rgb)
        result = self.landmarker.detect(self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=img))
        faces = result.face_landmarks
        if len(faces) != 1:
            return None
        h, w = img.shape[:2]
        return np.array([[p.x * w, p.y * h] for p in faces[0]], dtype=np.float64)

    def close(self):
        if self.landmarker is not None:
            self.landmarker.close()
            self.landmarker = None


class HalloFaceAnalysis:
    """Both detectors, built once and reused over many portraits: ``analysis(image) -> PortraitConditions``."""

    def __init__(self, models_dir):
        folder = models_folder(models_dir)
        for name, what in MODEL_FILES:   # files first: a missing one is named before any package is imported
            require_file(folder, name, what)
        self.landmarker = Landmarker(folder)
        try:
            self.embedder = FaceEmbedder(folder)
        except BaseException:
            self.landmarker.close()
            raise

    def __call__(self, image_rgb: np.ndarray, size: int = IMAGE_SIZE,
                 face_expand_ratio: float = FACE_EXPAND_RATIO) -> PortraitConditions:
        img = check_image(image_rgb)
        landmarks = self.landmarker(img)
        if landmarks is None:
            raise FadaError("MediaPipe found no face landmarks in the portrait: Hallo's masks need exactly one face")
        faces = self.embedder(img)
        return build_conditions(faces, landmarks, img.shape[0], img.shape[1], size=size,
                                face_expand_ratio=face_expand_ratio)

    def close(self):
        self.landmarker.close()
        self.embedder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def portrait_conditions(image_rgb_uint8: np.ndarray, models_dir, size: int = IMAGE_SIZE,
                        face_expand_ratio: float = FACE_EXPAND_RATIO) -> PortraitConditions:
    """Hallo's conditions for one uint8 RGB portrait (``ImageProcessor.preprocess`` without its file round trips),
    with the detectors from ``models_dir`` (Hallo's ``pretrained_models/face_analysis/models``). ``size``: the
    square side Hallo generates at (512); ``face_expand_ratio``: Hallo's config value (1.2). For many portraits
    build a :class:`HalloFaceAnalysis` once instead."""
    with HalloFaceAnalysis(models_dir) as analysis:
        return analysis(image_rgb_uint8, size=size, face_expand_ratio=face_expand_ratio)


class ConditionsFunction:
    """``image -> PortraitConditions`` for a model's ``model.conditions`` at the model's frame size: the detectors
    are built on the first call and kept (generation computes one portrait's conditions per video, the clip cache
    one per clip). ``identity`` keys cached conditions."""

    def __init__(self, cfg, size: int):
        if not cfg.face_analysis:
            raise FadaError("model.conditions.face_analysis: not set; point it at Hallo's "
                            "pretrained_models/face_analysis/models folder")
        self.cfg, self.size = cfg, int(size)
        self.identity = {"kind": cfg.kind, "face_analysis": str(cfg.face_analysis),
                         "face_expand_ratio": float(cfg.face_expand_ratio), "size": self.size}
        self._analysis = None

    def __call__(self, image_rgb: np.ndarray) -> PortraitConditions:
        if self._analysis is None:
            self._analysis = HalloFaceAnalysis(self.cfg.face_analysis)
        return self._analysis(image_rgb, size=self.size, face_expand_ratio=self.cfg.face_expand_ratio)


def conditions_function(cfg, size: int):
    """The per-portrait conditions ``model.conditions`` asks for (a ``ConditionsFunction``), or None ('none')."""
    return None if cfg.kind == "none" else ConditionsFunction(cfg, size)
