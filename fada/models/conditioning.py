"""Everything a denoising pass is conditioned on, in one object.

``Conditioning`` holds, per clip of the batch (B clips of F frames):

- ``audio_tokens`` (B, F, N, D): per-frame audio tokens (zeros where audio is dropped);
- ``bank`` / ``keep_ref``: the ReferenceNet bank (batch B) and which clips read its reference view;
- ``identity_tokens`` (B, N, D): read by SD1.5's cross-attention when the net's ``parts.attn2`` is 'identity';
- ``face_features`` (B, C0, h, w) or (B, C0, F, h, w): face-locator features added after ``conv_in``;
- ``region_masks``: per resolution level, (B, F, L, 3) weights of the full / face / lip regions on that level's
  L = h·w tokens (``stack_region_masks``), read by region audio blocks;
- ``motion_scale`` (3,) or (B, 3): the weights of the three regions' audio (Hallo's pose / face / lip weights);
- ``cfg_tokens`` / ``timestep_cond``: a CFG student's scale conditioning.

A field a net does not use is ignored; one it needs and lacks is a ValueError from the net.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
from torch import Tensor

from .attention import Bank


@dataclass(eq=False)
class Conditioning:
    audio_tokens: Tensor
    bank: Optional[Bank] = None
    keep_ref: Optional[Tensor] = None
    identity_tokens: Optional[Tensor] = None
    face_features: Optional[Tensor] = None
    region_masks: Optional[Sequence[Tensor]] = None
    motion_scale: Optional[Tensor] = None
    cfg_tokens: Optional[Tensor] = None
    timestep_cond: Optional[Tensor] = None
    read_split: Optional[object] = None  # attention.ReadSplit decided per plan (else found from keep_ref)

    @property
    def batch_size(self) -> int:
        return int(self.audio_tokens.shape[0])

    def replace(self, **changes) -> "Conditioning":
        return replace(self, **changes)


def stack_region_masks(full: Sequence[Tensor], face: Sequence[Tensor], lip: Sequence[Tensor],
                       batch: int = 1) -> list[Tensor]:
    """Per-level (F, L) full / face / lip masks (Hallo's pixel_values_*_mask lists) -> per level (batch, F, L, 3)."""
    out = []
    for a, b, c in zip(full, face, lip):
        m = torch.stack([a, b, c], dim=-1)
        out.append(m.unsqueeze(0).expand(batch, *m.shape) if m.ndim == 3 else m)
    return out


@dataclass(eq=False)
class Portrait:
    """Per-clip portrait conditions (B clips) for the net parts that read them: ``face_embeds`` (B, E) for the
    identity projection, ``face_region`` (B, 3, H, W) for the face locator (or its output ``face_features``
    (B, C0, h, w), computed once per clip), ``region_masks`` / ``motion_scale`` as in ``Conditioning``."""

    face_embeds: Optional[Tensor] = None
    face_region: Optional[Tensor] = None
    region_masks: Optional[Sequence[Tensor]] = None
    motion_scale: Optional[Tensor] = None
    face_features: Optional[Tensor] = None

    def with_features(self, face_locator) -> "Portrait":
        """This portrait with ``face_features`` computed from ``face_region`` (once, e.g. for every step)."""
        if face_locator is None or self.face_region is None or self.face_features is not None:
            return self
        p = next(face_locator.parameters())
        return replace(self, face_features=face_locator(self.face_region.to(device=p.device, dtype=p.dtype)))

    def tile(self, n: int) -> "Portrait":
        """The clips repeated n times (torch.cat([x] * n)), as the stacked guidance branches are."""
        if n == 1:
            return self

        def rep(x):
            return None if x is None else torch.cat([x] * n)

        ms = self.motion_scale
        if ms is not None and torch.as_tensor(ms).ndim > 1:
            ms = rep(torch.as_tensor(ms))
        masks = None if self.region_masks is None else [rep(m) for m in self.region_masks]
        return Portrait(rep(self.face_embeds), rep(self.face_region), masks, ms, rep(self.face_features))


def portrait_fields(portrait: Optional[Portrait], keep_ref: Optional[Tensor], identity_proj=None,
                    face_locator=None) -> dict:
    """The ``Conditioning`` fields a portrait gives, for rows whose ``keep_ref`` (B,) says whether they keep the
    reference condition: dropped rows get the identity tokens of a zero embedding and zero face features (with
    the reference view of the bank, Hallo's unconditional row drops all three together)."""
    if portrait is None:
        return {}
    out = {"region_masks": portrait.region_masks, "motion_scale": portrait.motion_scale}
    if identity_proj is not None and portrait.face_embeds is not None:
        p = next(identity_proj.parameters())
        out["identity_tokens"] = identity_proj.tokens(portrait.face_embeds.to(device=p.device, dtype=p.dtype),
                                                      keep_ref)
    feats = portrait.with_features(face_locator).face_features
    if feats is not None:
        if keep_ref is not None:
            keep = torch.as_tensor(keep_ref, device=feats.device).bool().reshape(-1)
            feats = torch.where(keep.reshape(-1, *([1] * (feats.ndim - 1))), feats, torch.zeros_like(feats))
        out["face_features"] = feats
    return out
