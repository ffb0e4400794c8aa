"""Hallo's per-portrait conditions, computed from detector outputs by pure functions (numpy, OpenCV, PIL, torch).

Hallo conditions its denoising net on tensors derived once from the portrait: an InsightFace identity embedding,
the face-locator input mask and three attention-region masks (background/"full", face, lip) at the four attention
resolutions. This module reproduces, value for value, what Hallo (commit 8fd7c57) computes in
``hallo/datasets/image_processor.py`` ``ImageProcessor.preprocess`` and the ``hallo/utils/util.py`` helpers it
reaches through ``get_mask`` (``get_face_mask``, ``get_lip_mask``, ``expand_region``, ``get_blur_mask`` /
``blur_mask``, ``get_background_mask``, ``get_sep_face_mask``), plus the reshaping in ``scripts/inference.py``.
The detectors themselves live in :mod:`fada.data.face_analysis`; here the inputs are plain data (a list of faces
with ``bbox`` and ``embedding``, and a (478, 2) array of MediaPipe landmarks in pixels), so tests can fabricate them.

Hallo writes its intermediate masks as 8-bit PNGs and reads them back; PNG is lossless, so working on the uint8
arrays directly gives the same numbers. Where Hallo's arithmetic is odd, it is kept and marked "quirk".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from fada.errors import FadaError, MissingFileError

# MediaPipe face-mesh indices, as listed in hallo/utils/util.py (silhouette_ids, lip_ids).
SILHOUETTE_IDS = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                  152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIP_IDS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375)

IMAGE_SIZE = 512            # configs/inference/default.yaml data.source_image.{width,height}
FACE_EXPAND_RATIO = 1.2     # configs/inference/default.yaml face_expand_ratio (passed to get_face_mask)
LIP_EXPAND_RATIO = 2.0      # get_lip_mask's default: get_mask never passes one
BLUR_SIZE = 64              # blur_mask's resize_dim: masks are blurred at 64x64 whatever the image size
FACE_BLUR_KERNEL = 51       # get_mask: get_blur_mask(face_mask, kernel_size=(51, 51))
LIP_BLUR_KERNEL = 31        # get_mask: get_blur_mask(lip_mask, kernel_size=(31, 31))
LEVEL_DIVISORS = (8, 16, 32, 64)  # ImageProcessor.attn_transform_64/32/16/8 (for 512: 64, 32, 16, 8 pixels)
EMBED_DIM = 512
MIN_LANDMARKS = 1 + max(max(SILHOUETTE_IDS), max(LIP_IDS))


def expand_region(region: Sequence[float], image_w: int, image_h: int,
                  expand_ratio: float = 1.0) -> tuple[int, int, int, int]:
    """``(min_x, max_x, min_y, max_y)`` grown about its centre by ``expand_ratio``, shifted back inside the image.

    Same arithmetic as util.py ``expand_region``. Quirk: the centre and the half side use ``//`` on floats
    (floor), so the grown side is always even and the centre rounds down; a side longer than the image is
    shifted past the opposite edge and leaves a negative minimum (see :func:`region_mask`).
    """
    def grow(lo: float, hi: float, limit: int) -> tuple[float, float]:
        centre = (hi + lo) // 2
        half = (hi - lo) * expand_ratio // 2
        lo, hi = centre - half, centre + half
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > limit:
            lo, hi = lo - (hi - limit), limit
        return lo, hi

    x0, x1 = grow(float(region[0]), float(region[1]), image_w)
    y0, y1 = grow(float(region[2]), float(region[3]), image_h)
    return round(x0), round(x1), round(y0), round(y1)


def check_landmarks(landmarks) -> np.ndarray:
    """Landmarks as float64 (N, 2) pixel coordinates (x, y); N must cover the face-mesh indices used."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < MIN_LANDMARKS:
        raise FadaError(f"face landmarks must be an (N>={MIN_LANDMARKS}, 2) array of pixel (x, y), "
                        f"got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise FadaError("face landmarks contain NaN or infinite values")
    return pts


def region_mask(landmarks, ids: Sequence[int], height: int, width: int, expand_ratio: float) -> np.ndarray:
    """uint8 (height, width) mask, 255 inside the expanded box of the chosen landmarks (util.py ``get_face_mask``
    / ``get_lip_mask``).

    The box's corners are the landmarks' min/max rounded with ``np.round`` (half to even), then
    :func:`expand_region`. The box is filled with plain slicing, max excluded. Quirk kept: when the grown box is
    larger than the image, its minimum is negative and Python slicing counts it from the far edge, so only a
    strip at the far side is filled (or nothing at all).
    """
    pts = check_landmarks(landmarks)[list(ids)]
    lo, hi = np.round(pts.min(axis=0)), np.round(pts.max(axis=0))
    x0, x1, y0, y1 = expand_region((lo[0], hi[0], lo[1], hi[1]), width, height, expand_ratio)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 255
    return mask


def face_region_mask(landmarks, height: int, width: int,
                     expand_ratio: float = FACE_EXPAND_RATIO) -> np.ndarray:
    """The face box (silhouette landmarks) as util.py ``get_face_mask`` draws it, at the source image's size."""
    return region_mask(landmarks, SILHOUETTE_IDS, height, width, expand_ratio)


def lip_region_mask(landmarks, height: int, width: int, expand_ratio: float = LIP_EXPAND_RATIO) -> np.ndarray:
    """The lip box as util.py ``get_lip_mask`` draws it (its default ratio 2.0), at the source image's size."""
    return region_mask(landmarks, LIP_IDS, height, width, expand_ratio)


def blur_mask(mask: np.ndarray, kernel: int) -> np.ndarray:
    """util.py ``blur_mask``: OpenCV bilinear resize to 64x64 (no antialias), Gaussian blur with a square
    ``kernel`` and sigma derived from it (sigma=0), then min-max stretch to 0..255 (uint8 in, uint8 out).

    Quirk: the blur runs at 64x64 whatever the image size, so the kernel is 51/64 (face) or 31/64 (lip) of the
    image side. A constant mask (empty box) stretches to all zeros.
    """
    small = cv2.resize(np.ascontiguousarray(mask, dtype=np.uint8), (BLUR_SIZE, BLUR_SIZE))
    blurred = cv2.GaussianBlur(small, (kernel, kernel), 0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def separate_masks(face_mask: np.ndarray, lip_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background, face, lip) uint8 64x64 masks from the full-size face and lip boxes, as ``get_mask`` chains
    ``get_blur_mask``, ``get_background_mask`` and ``get_sep_face_mask``.

    Quirk kept: the background is ``((1 - v/255) * 255).astype(uint8)``, which truncates, so 50 of the 256 values
    come out one below ``255 - v`` (e.g. v=43 gives 211). The face mask is the saturating ``cv2.subtract`` of the
    blurred lip from the blurred face.
    """
    face_blur = blur_mask(face_mask, FACE_BLUR_KERNEL)
    lip_blur = blur_mask(lip_mask, LIP_BLUR_KERNEL)
    background = ((1.0 - (face_blur / 255.0)) * 255).astype(np.uint8)
    return background, cv2.subtract(face_blur, lip_blur), lip_blur


def pil_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """What torchvision's ``transforms.Resize((height, width))`` does to a PIL image (Hallo's transforms), without
    torchvision: the image is returned unchanged at its size already, otherwise PIL ``Image.resize((width,
    height), Image.BILINEAR)``. PIL's bilinear filter always antialiases (its support widens with the
    downscale factor), which is why torchvision documents that PIL inputs are antialiased regardless of the
    ``antialias`` argument. uint8 (H, W) or (H, W, 3) in, same out.
    """
    if image.shape[:2] == (height, width):
        return image
    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def to_unit_tensor(image: np.ndarray) -> torch.Tensor:
    """torchvision ``ToTensor`` on an 8-bit image: float32 (C, H, W) divided by 255."""
    arr = image[:, :, None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(torch.float32).div(255)


def attention_masks(mask64: np.ndarray, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, ...]:
    """One 64x64 uint8 mask at the four attention resolutions, largest first, each flattened to (1, h*w):
    ``ImageProcessor.attn_transform_64/32/16/8`` then ``mask.view(1, -1)``. For 512 the first is 64x64 (the
    mask itself); the others are PIL bilinear (antialiased) downscales of it."""
    out = []
    for div in LEVEL_DIVISORS:
        side = size // div
        out.append(to_unit_tensor(pil_resize(mask64, side, side)).view(1, -1))
    return tuple(out)


def face_locator_mask(face_mask: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """The face locator's input: the full-size 0/255 face box as RGB, resized to size x size, in [0, 1], shape
    (3, size, size) (``ImageProcessor.preprocess`` step 2.3, ``cond_transform``). A non-square source is
    squashed, as in Hallo (its README asks for square portraits)."""
    rgb = np.repeat(face_mask[:, :, None], 3, axis=2)
    return to_unit_tensor(pil_resize(rgb, size, size))


def _field(face: Any, key: str):
    if isinstance(face, Mapping):
        return face.get(key)
    return getattr(face, key, None)


def select_face(faces: Sequence[Any]) -> int | None:
    """Index of the face Hallo keeps: the largest ``bbox`` area ``(x1-x0)*(y1-y0)``; on a tie the earliest, since
    ``preprocess`` sorts with ``reverse=True`` and Python's sort is stable. None when there is no face.
    (Hallo's data-processing variant takes ``sorted(...)[-1]``, the last of tied faces; inference is followed.)"""
    best, best_area = None, None
    for i, face in enumerate(faces):
        box = np.asarray(_field(face, "bbox"))
        if box.shape != (4,):
            raise FadaError(f"face {i}: bbox must be (x0, y0, x1, y1), got shape {box.shape}")
        area = (box[2] - box[0]) * (box[3] - box[1])
        if best_area is None or area > best_area:
            best, best_area = i, area
    return best


def face_embedding(faces: Sequence[Any]) -> tuple[torch.Tensor, bool]:
    """(512-d float32 embedding, found). InsightFace's raw ``embedding`` of the largest face, not the
    L2-normalised ``normed_embedding``; zeros when no face was found (``preprocess`` then also uses the whole
    image as the box, but that box is never used afterwards)."""
    idx = select_face(faces)
    if idx is None:
        return torch.zeros(EMBED_DIM, dtype=torch.float32), False
    emb = _field(faces[idx], "embedding")
    if emb is None:
        raise FadaError("the largest face has no embedding: the InsightFace recognition model did not run")
    emb = np.asarray(emb, dtype=np.float32).reshape(-1)
    if emb.shape != (EMBED_DIM,):
        raise FadaError(f"face embedding must have {EMBED_DIM} values, got {emb.shape[0]}")
    return torch.from_numpy(emb.copy()), True


MASK_KINDS = ("full", "face", "lip")


@dataclass
class PortraitConditions:
    """Hallo's conditions for one portrait, in the shapes ``ImageProcessor.preprocess`` returns them.

    ``face_emb`` (512,) float32; ``face_mask`` (3, S, S) in [0, 1] for the face locator; ``full_masks``,
    ``face_masks``, ``lip_masks``: 4 tensors each, (1, (S/8)^2), (1, (S/16)^2), (1, (S/32)^2), (1, (S/64)^2).
    ``face_found`` is False when InsightFace found no face and the embedding is the zero fallback.
    """

    face_emb: torch.Tensor
    face_mask: torch.Tensor
    full_masks: tuple[torch.Tensor, ...]
    face_masks: tuple[torch.Tensor, ...]
    lip_masks: tuple[torch.Tensor, ...]
    face_found: bool = True
    size: int = field(init=False)

    def __post_init__(self):
        self.size = int(self.face_mask.shape[-1])
        problems = []
        if tuple(self.face_emb.shape) != (EMBED_DIM,):
            problems.append(f"face_emb shape {tuple(self.face_emb.shape)}, expected ({EMBED_DIM},)")
        if tuple(self.face_mask.shape) != (3, self.size, self.size):
            problems.append(f"face_mask shape {tuple(self.face_mask.shape)}, expected (3, S, S)")
        expected = [(1, (self.size // d) ** 2) for d in LEVEL_DIVISORS]
        for kind in MASK_KINDS:
            got = [tuple(m.shape) for m in getattr(self, f"{kind}_masks")]
            if got != expected:
                problems.append(f"{kind}_masks shapes {got}, expected {expected}")
        if problems:
            raise FadaError("portrait conditions: " + "; ".join(problems))

    def for_clip(self, clip_length: int) -> dict:
        """The tensors as ``scripts/inference.py`` hands them to ``FaceAnimatePipeline``, under its argument names:
        ``face_emb`` (1, 512), ``face_mask`` (1, 3, S, S) (the locator input), and ``pixel_values_{full,face,lip}
        _mask``: each level repeated over the clip's frames, (clip_length, h*w)."""
        out = {"face_emb": self.face_emb.reshape(1, -1), "face_mask": self.face_mask.unsqueeze(0)}
        for kind in MASK_KINDS:
            out[f"pixel_values_{kind}_mask"] = [m.repeat(clip_length, 1) for m in getattr(self, f"{kind}_masks")]
        return out

    def portrait(self, num_frames: int, motion_scale=(1.0, 1.0, 1.0), device=None, dtype=None):
        """These conditions as the denoising net reads them (``fada.models.conditioning.Portrait`` of one clip of
        ``num_frames`` frames): the masks repeated over the frames as ``scripts/inference.py`` repeats them."""
        from fada.models.conditioning import Portrait, stack_region_masks

        kw = {"device": device, "dtype": dtype or torch.float32}
        full, face, lip = ([m.repeat(num_frames, 1).to(**kw) for m in getattr(self, f"{k}_masks")]
                           for k in MASK_KINDS)
        return Portrait(face_embeds=self.face_emb.reshape(1, -1).to(**kw),
                        face_region=self.face_mask.unsqueeze(0).to(**kw),
                        region_masks=stack_region_masks(full, face, lip),
                        motion_scale=torch.tensor([float(x) for x in motion_scale], **kw))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor map (``full_masks.0`` is the largest level)."""
        out = {"face_emb": self.face_emb, "face_mask": self.face_mask}
        for kind in MASK_KINDS:
            for i, m in enumerate(getattr(self, f"{kind}_masks")):
                out[f"{kind}_masks.{i}"] = m
        return out

    def save(self, path) -> Path:
        """Write a safetensors file (no pickle), e.g. beside a clip's cached reference latents."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        save_file(tensors, str(path), metadata={"format": "hallo_portrait_conditions",
                                                "face_found": str(bool(self.face_found))})
        return path

    @classmethod
    def load(cls, path) -> "PortraitConditions":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(path, "portrait conditions file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for a corrupt header
            raise FadaError(f"{path}: not a safetensors file ({e})") from e
        if meta.get("format") != "hallo_portrait_conditions":
            raise FadaError(f"{path}: not a portrait conditions file (format={meta.get('format')!r})")
        try:
            masks = {kind: tuple(tensors[f"{kind}_masks.{i}"] for i in range(len(LEVEL_DIVISORS)))
                     for kind in MASK_KINDS}
            return cls(tensors["face_emb"], tensors["face_mask"], masks["full"], masks["face"], masks["lip"],
                       face_found=meta.get("face_found", "True") == "True")
        except KeyError as e:
            raise FadaError(f"{path}: portrait conditions file lacks tensor {e}") from None


def batch_portrait(batch: dict):
    """The ``Portrait`` of a training batch whose items carry their clip's conditions (``cond.*``, ClipWindowDataset;
    None without): the masks repeated over the batch's F frames."""
    if "cond.face_emb" not in batch:
        return None
    from fada.models.conditioning import Portrait, stack_region_masks

    frames = batch["x0"].shape[2]
    masks = [[batch[f"cond.{kind}_masks.{i}"].expand(-1, frames, -1) for i in range(len(LEVEL_DIVISORS))]
             for kind in MASK_KINDS]
    return Portrait(face_embeds=batch["cond.face_emb"], face_region=batch["cond.face_mask"],
                    region_masks=stack_region_masks(*masks), motion_scale=batch["cond.motion_scale"][0])


def check_size(size: int) -> int:
    """The square image side Hallo runs at; a multiple of 64 so every attention level has whole pixels."""
    if int(size) != size or size <= 0 or size % 64:
        raise FadaError(f"image size must be a positive multiple of 64, got {size}")
    return int(size)


def build_conditions(faces: Sequence[Any], landmarks, height: int, width: int, size: int = IMAGE_SIZE,
                     face_expand_ratio: float = FACE_EXPAND_RATIO) -> PortraitConditions:
    """All of Hallo's portrait conditions from detector outputs on a ``height`` x ``width`` source image.

    ``faces``: InsightFace's faces (dict-like or objects with ``bbox`` (x0, y0, x1, y1) and ``embedding``), any
    number, possibly none. ``landmarks``: MediaPipe FaceLandmarker's landmarks of the one face, in pixels of the
    source image ((x * width, y * height), as util.py ``compute_face_landmarks``). ``size``: the square image
    side (Hallo's 512). The masks are drawn at the source size, as Hallo draws them before any resize.
    """
    size = check_size(size)
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise FadaError(f"image size must be positive, got {height}x{width}")
    emb, found = face_embedding(faces)
    face_box = face_region_mask(landmarks, height, width, face_expand_ratio)
    lip_box = lip_region_mask(landmarks, height, width)
    background, face, lip = separate_masks(face_box, lip_box)
    return PortraitConditions(face_emb=emb, face_mask=face_locator_mask(face_box, size),
                              full_masks=attention_masks(background, size), face_masks=attention_masks(face, size),
                              lip_masks=attention_masks(lip, size), face_found=found)
