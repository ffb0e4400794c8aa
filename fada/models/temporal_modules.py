"""Temporal modules: what mixes a denoising net's frames at each spatial position, one class per kind.

Kinds (``parts.temporal.kind`` of the denoising net's config):

- ``fada``: ``TemporalAttention``, one pre-norm self-attention across the F frames (sinusoidal frame position added
  to the normed tokens), zero-initialised output, residual. The net starts as SD1.5 frame by frame.
- ``animatediff``: ``AnimateDiffTemporal``, AnimateDiff v2's motion module (Hallo's "VanillaTemporalModule"):
  per-frame GroupNorm, a linear ``proj_in``, then per block pre-LayerNorm temporal self-attentions whose input is
  the normed tokens plus a sinusoidal frame position (max ``max_len`` frames) and a GEGLU feed-forward, a linear
  ``proj_out`` (zero-initialised), residual. It can read ``prefix`` frames -- Hallo puts the motion frames (the
  ReferenceNet's normed tokens of the previous clip's last frames, from the bank) in front of the clip's frames,
  runs the module over M + F frames and keeps the last F: the clip continues the motion of the one before.

Both take (B·F, C, h, w) feature maps of B clips of F frames and return the same shape.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from fada.errors import FadaError

from .attention import PlainAttnProcessor, attention, merge_heads, split_heads

TEMPORAL_KINDS = ("fada", "animatediff")


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    """(n, dim) transformer position encoding: sin on even channels, cos on odd ones."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


def zero_linear(i: int, o: int) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class TemporalAttention(nn.Module):
    """Self-attention across frames at each spatial position; zero-initialised output; residual."""

    _fada_attention_layer = True
    reads_motion_prefix = False

    def __init__(self, channels: int, heads: int = 8, max_frames: int = 32):
        super().__init__()
        if channels % heads:
            raise FadaError(f"unet.temporal_heads: {heads} heads do not divide a level's {channels} channels")
        self.heads, self.max_frames = int(heads), int(max_frames)
        self.attention_backend = "sdpa"
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = zero_linear(channels, channels)
        self.register_buffer("pos", sinusoidal_positions(max_frames, channels), persistent=False)

    def forward(self, h: Tensor, num_frames: int) -> Tensor:
        bf, c, hh, ww = h.shape
        f = int(num_frames)
        if f > self.max_frames:
            raise FadaError(f"unet.max_frames: {f} frames exceed the temporal position encoding ({self.max_frames})")
        b = bf // f
        x = h.reshape(b, f, c, hh * ww).permute(0, 3, 1, 2).reshape(b * hh * ww, f, c)
        y = self.norm(x) + self.pos[:f].to(x.dtype)
        q, k, v = (split_heads(lin(y), self.heads) for lin in (self.to_q, self.to_k, self.to_v))
        y = self.to_out(merge_heads(attention(q, k, v, None, self.attention_backend)))
        y = y.reshape(b, hh * ww, f, c).permute(0, 2, 3, 1).reshape(bf, c, hh, ww)
        return h + y


class _TemporalBlock(nn.Module):
    """Pre-LayerNorm temporal self-attentions (input: normed tokens + frame position) and a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, attentions: int, max_len: int):
        super().__init__()
        from diffusers.models.attention import FeedForward
        from diffusers.models.attention_processor import Attention

        self.attentions = nn.ModuleList()
        for _ in range(attentions):
            attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
            attn.set_processor(PlainAttnProcessor("temporal"))
            self.attentions.append(attn)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(attentions))
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)
        self.register_buffer("pos", sinusoidal_positions(max_len, dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, T, dim): N token sequences of T frames."""
        pos = self.pos[: x.shape[1]].to(x.dtype)
        for attn, norm in zip(self.attentions, self.norms):
            x = attn(norm(x) + pos) + x
        return self.ff(self.ff_norm(x)) + x


class AnimateDiffTemporal(nn.Module):
    """AnimateDiff v2 motion module (see the module docstring); ``forward(h, num_frames, prefix)``."""

    reads_motion_prefix = True

    def __init__(self, channels: int, heads: int = 8, blocks: int = 1, attentions: int = 2, max_len: int = 32,
                 norm_groups: int = 32):
        super().__init__()
        if channels % heads or channels % norm_groups:
            raise FadaError(f"parts.temporal: {heads} heads / {norm_groups} groups do not divide {channels} channels")
        self.max_len = int(max_len)
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(_TemporalBlock(channels, heads, attentions, max_len) for _ in range(blocks))
        self.proj_out = zero_linear(channels, channels)  # the module starts as the identity

    def forward(self, h: Tensor, num_frames: int, prefix: Optional[Tensor] = None) -> Tensor:
        """h (B·F, C, hh, ww); prefix (B, M, hh·ww, C) tokens of M frames put before each clip's F frames
        (seen by the attention, not returned) or None."""
        bf, c, hh, ww = h.shape
        f = int(num_frames)
        b = bf // f
        x = h.reshape(b, f, c, hh, ww)
        m = 0
        if prefix is not None and prefix.shape[1] > 0:
            m = prefix.shape[1]
            if prefix.shape[0] != b or prefix.shape[2] != hh * ww or prefix.shape[3] != c:
                raise ValueError(f"motion prefix {tuple(prefix.shape)} does not fit frames {tuple(h.shape)}")
            pre = prefix.to(h.dtype).reshape(b, m, hh, ww, c).permute(0, 1, 4, 2, 3)
            x = torch.cat([pre, x], dim=1)
        t = m + f
        if t > self.max_len:
            raise FadaError(f"parts.temporal.max_len: {t} frames exceed the position encoding ({self.max_len})")
        x = x.reshape(b * t, c, hh, ww)
        residual = x
        y = self.proj_in(self.norm(x).permute(0, 2, 3, 1))  # (B·T, hh, ww, C)
        y = y.reshape(b, t, hh * ww, c).transpose(1, 2).reshape(b * hh * ww, t, c)
        for block in self.blocks:
            y = block(y)
        y = self.proj_out(y).reshape(b, hh, ww, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hh, ww)
        out = (y + residual).reshape(b, t, c, hh, ww)[:, m:]
        return out.reshape(bf, c, hh, ww)


def build_temporal(spec: dict, channels: int, heads: int, max_frames: int) -> nn.Module:
    """The temporal module of ``spec['kind']`` for a level of ``channels``; ``heads`` / ``max_frames`` are the
    denoising net's ``temporal_heads`` / ``max_frames`` (kind 'fada')."""
    kind = spec.get("kind", "fada")
    if kind == "fada":
        return TemporalAttention(channels, heads, max_frames)
    if kind == "animatediff":
        return AnimateDiffTemporal(channels, int(spec.get("heads", 8)), int(spec.get("blocks", 1)),
                                   int(spec.get("attentions", 2)), int(spec.get("max_len", 32)),
                                   int(spec.get("norm_groups", 32)))
    raise FadaError(f"parts.temporal.kind: unknown kind {kind!r} (choose one of {', '.join(TEMPORAL_KINDS)})")
