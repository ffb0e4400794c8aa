"""Which kind of each part a denoising net is built with: its ``parts`` sub-config, saved with the net.

Keys and kinds (defaults first: a config without ``parts`` builds the net fada has always built):

``temporal``      ``{"kind": "fada"}`` (``TemporalAttention``, heads/max_frames from the net's own fields) or
                  ``{"kind": "animatediff", "heads", "blocks", "attentions", "max_len", "norm_groups",
                  "motion_prefix"}`` (AnimateDiff v2's motion module; ``motion_prefix``: the bank's motion views
                  go in front of the frames, as Hallo runs it); see ``temporal_modules``.
``audio``         ``{"kind": "attn2"}`` (audio tokens through SD1.5's text cross-attention) or
                  ``{"kind": "hallo", "audio_dim"}`` (region-masked audio blocks); see ``audio_blocks``.
``attn2``         what SD1.5's cross-attention reads: ``"audio"`` (the audio tokens) or ``"identity"`` (identity
                  tokens of the portrait, Hallo's choice; the audio then needs a block kind that reads it).
``bank_read``     which views of the ReferenceNet bank the spatial self-attention reads: ``"all"`` (reference and
                  motion frames) or ``"reference"`` (the reference only; Hallo gives the motion frames to the
                  temporal modules instead).
``bank_pairing``  which clip's bank a frame's attn1 reads: ``"clip"`` (its own) or ``"tiled"`` (row r of the B·F
                  frame batch reads bank sample r mod B: Hallo repeats the reference tokens with einops on a
                  3-D tensor, which tiles the B samples over the rows instead of repeating each F times; with a
                  [uncond, cond] batch the cond clip's even frames read the reference as the uncond pass
                  encoded it).
``bank_dtype``    ``null``, ``"float16"`` or ``"bfloat16"``: the net reads a copy of the bank rounded to this dtype
                  (Hallo's reader copies the bank with ``update(writer, dtype=torch.float16)``, its default, even
                  in a float32 run).
``face_locator``  ``null`` or ``{"in_channels", "widths"}``: a ``FaceLocator`` whose features are added after
                  ``conv_in``.

``HALLO_PARTS`` is Hallo's choice of every part.
"""

from __future__ import annotations

import copy
from typing import Optional

from fada.errors import FadaError

from .audio_blocks import AUDIO_KINDS
from .temporal_modules import TEMPORAL_KINDS

KIND_DEFAULTS = {
    "temporal": {
        "fada": {},
        "animatediff": {"heads": 8, "blocks": 1, "attentions": 2, "max_len": 32, "norm_groups": 32,
                        "motion_prefix": True},
    },
    "audio": {"attn2": {}, "hallo": {"audio_dim": 768}},
}
DEFAULT_PARTS = {"temporal": {"kind": "fada"}, "audio": {"kind": "attn2"}, "attn2": "audio", "bank_read": "all",
                 "bank_pairing": "clip", "bank_dtype": None, "face_locator": None}
FACE_LOCATOR_DEFAULTS = {"in_channels": 3, "widths": [16, 32, 64, 128]}
HALLO_PARTS = {"temporal": {"kind": "animatediff"}, "audio": {"kind": "hallo"}, "attn2": "identity",
               "bank_read": "reference", "bank_pairing": "tiled", "bank_dtype": "float16", "face_locator": {}}


def _kind(section: str, spec, kinds) -> dict:
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise FadaError(f"parts.{section}: expected a mapping with a 'kind', got {spec!r}")
    kind = spec.get("kind", DEFAULT_PARTS[section]["kind"])
    if kind not in kinds:
        raise FadaError(f"parts.{section}.kind: unknown kind {kind!r} (choose one of {', '.join(kinds)})")
    defaults = KIND_DEFAULTS[section][kind]
    unknown = sorted(set(spec) - set(defaults) - {"kind"})
    if unknown:
        raise FadaError(f"parts.{section}: unknown key {unknown[0]!r} for kind {kind!r}")
    return {"kind": kind, **defaults, **{k: v for k, v in spec.items() if k != "kind"}}


def resolve_parts(parts: Optional[dict]) -> dict:
    """``parts`` with every default filled in; a one-line FadaError for an unknown key, kind or value."""
    parts = dict(parts or {})
    unknown = sorted(set(parts) - set(DEFAULT_PARTS))
    if unknown:
        raise FadaError(f"parts: unknown key {unknown[0]!r} (choose from {', '.join(DEFAULT_PARTS)})")
    out = copy.deepcopy(DEFAULT_PARTS)
    out["temporal"] = _kind("temporal", parts.get("temporal", out["temporal"]), TEMPORAL_KINDS)
    out["audio"] = _kind("audio", parts.get("audio", out["audio"]), AUDIO_KINDS)
    for key, choices in (("attn2", ("audio", "identity")), ("bank_read", ("all", "reference")),
                         ("bank_pairing", ("clip", "tiled")), ("bank_dtype", (None, "float16", "bfloat16"))):
        value = parts.get(key, out[key])
        if value not in choices:
            raise FadaError(f"parts.{key}: {value!r} is not one of {', '.join(choices)}")
        out[key] = value
    if out["attn2"] == "identity" and out["audio"]["kind"] == "attn2":
        raise FadaError("parts.attn2: 'identity' leaves the audio unread; choose an audio block kind ('hallo')")
    fl = parts.get("face_locator")
    if fl is not None:
        if not isinstance(fl, dict) or set(fl) - set(FACE_LOCATOR_DEFAULTS):
            raise FadaError(f"parts.face_locator: expected null or a mapping of {', '.join(FACE_LOCATOR_DEFAULTS)}")
        out["face_locator"] = {**copy.deepcopy(FACE_LOCATOR_DEFAULTS), **fl}
    return out


def is_default(parts: dict) -> bool:
    return resolve_parts(parts) == resolve_parts(None)
