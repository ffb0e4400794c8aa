"""Audio blocks: how a denoising net reads its per-frame audio tokens, one kind per class.

Kinds (``parts.audio.kind`` of the denoising net's config):

- ``attn2`` (no module here): SD1.5's text cross-attention (``attn2`` of each spatial transformer) reads the audio
  tokens. An SD1.5 init is undisturbed and no layer is added.
- ``hallo``: ``RegionAudioBlock``, Hallo's region-weighted audio transformer, run after each spatial transformer:
  GroupNorm, 1×1 ``proj_in`` to an inner width, self-attention, then three cross-attentions to the audio tokens
  whose outputs are weighted per token by the full (pose/background), face and lip masks of the frame, each passed
  through a 1×1 conv (zero-initialised) and summed with the ``motion_scale`` weights, a GEGLU feed-forward, 1×1
  ``proj_out`` (zero-initialised here, so the block starts as the identity), residual. The masks say where the
  audio may move the picture and how much: lips most, the face less, the head pose least.

Hallo's inner width is the width of the *block input* (``hallo_audio_layout``): in a down block the first layer's
is the previous level's width, the later layers' the level's own; in an up block every layer's is the width of the
level below in the encoder; the mid block's its own. With SD1.5 widths (320, 640, 1280, 1280) the first audio
block of ``down_blocks.1`` works at 320 on a 640-channel map.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from fada.errors import FadaError

from .attention import PlainAttnProcessor

AUDIO_KINDS = ("attn2", "hallo")
REGIONS = ("full", "face", "lip")


def _attention(dim: int, heads: int, context_dim: Optional[int] = None):
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads, bias=False)
    attn.set_processor(PlainAttnProcessor("audio"))
    return attn


def _zero_conv(i: int, o: int) -> nn.Conv2d:
    conv = nn.Conv2d(i, o, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _conv_tokens(conv: nn.Conv2d, x: Tensor, hh: int, ww: int) -> Tensor:
    """A 1×1 conv on (N, hh·ww, C) tokens, through the feature-map layout the weights are kept in."""
    n, _, c = x.shape
    y = conv(x.transpose(1, 2).reshape(n, c, hh, ww))
    return y.reshape(n, y.shape[1], hh * ww).transpose(1, 2)


class RegionAudioBlock(nn.Module):
    """Hallo's audio module (see the module docstring). ``level``: the resolution level whose masks it reads."""

    def __init__(self, channels: int, inner: int, heads: int, audio_dim: int, level: int, norm_groups: int = 32):
        super().__init__()
        if inner % heads:
            raise FadaError(f"parts.audio: {heads} heads do not divide the audio block width {inner}")
        self.level, self.inner = int(level), int(inner)
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
        self.norm1 = nn.LayerNorm(inner)
        self.attn1 = _attention(inner, heads)
        self.norm2 = nn.LayerNorm(inner)
        self.attn_full, self.attn_face, self.attn_lip = (_attention(inner, heads, audio_dim) for _ in REGIONS)
        self.conv_full, self.conv_face, self.conv_lip = (_zero_conv(inner, inner) for _ in REGIONS)
        self.norm3 = nn.LayerNorm(inner)
        from diffusers.models.attention import FeedForward

        self.ff = FeedForward(inner, activation_fn="geglu")
        self.proj_out = _zero_conv(inner, channels)

    def forward(self, h: Tensor, tokens: Tensor, masks: Optional[Tensor] = None,
                scale: Optional[Tensor] = None) -> Tensor:
        """h (B·F, C, hh, ww); tokens (B·F, N, D) audio tokens of each frame; masks (B·F, hh·ww, 3) the frame's
        full/face/lip weights at this level (None: 1 everywhere); scale (B·F, 3) or (3,) the motion_scale
        weights of the three regions (None: 1)."""
        bf, _, hh, ww = h.shape
        x = self.proj_in(self.norm(h)).permute(0, 2, 3, 1).reshape(bf, hh * ww, self.inner)
        x = self.attn1(self.norm1(x)) + x
        n = self.norm2(x)
        tokens = tokens.to(x.dtype)
        regions = []
        for i, (attn, conv) in enumerate(((self.attn_full, self.conv_full), (self.attn_face, self.conv_face),
                                          (self.attn_lip, self.conv_lip))):
            y = attn(n, encoder_hidden_states=tokens)
            if masks is not None:
                y = y * masks[:, :, i:i + 1].to(y.dtype)
            regions.append(_conv_tokens(conv, y, hh, ww))
        if scale is None:
            x = regions[0] + regions[1] + regions[2] + x
        else:
            s = torch.as_tensor(scale, dtype=x.dtype, device=x.device).reshape(-1, 3)[:, None, None, :]
            x = s[..., 0] * regions[0] + s[..., 1] * regions[1] + s[..., 2] * regions[2] + x
        x = self.ff(self.norm3(x)) + x
        return self.proj_out(x.reshape(bf, hh, ww, self.inner).permute(0, 3, 1, 2)) + h


def hallo_audio_layout(unet) -> dict[str, tuple[int, int]]:
    """{transformer path ('down_blocks.1.attentions.0', ...): (inner width, resolution level)} of Hallo's audio
    blocks for a diffusers UNet2DConditionModel (see the module docstring)."""
    cfg = unet.config
    widths = list(cfg.block_out_channels)
    n = len(widths)
    rev = widths[::-1]
    out = {}
    for i, block in enumerate(unet.down_blocks):
        for j, _ in enumerate(getattr(block, "attentions", None) or []):
            block_in = widths[max(i - 1, 0)]
            out[f"down_blocks.{i}.attentions.{j}"] = (block_in if j == 0 else widths[i], i)
    if getattr(unet.mid_block, "attentions", None) is not None:
        for j, _ in enumerate(unet.mid_block.attentions):
            out[f"mid_block.attentions.{j}"] = (widths[-1], n - 1)
    for i, block in enumerate(unet.up_blocks):
        for j, _ in enumerate(getattr(block, "attentions", None) or []):
            out[f"up_blocks.{i}.attentions.{j}"] = (rev[min(i + 1, n - 1)], n - 1 - i)
    return out


def build_audio_block(spec: dict, channels: int, inner: int, heads: int, level: int,
                      norm_groups: int) -> Optional[nn.Module]:
    """The audio block of ``spec['kind']`` for one spatial transformer (None for 'attn2')."""
    kind = spec.get("kind", "attn2")
    if kind == "attn2":
        return None
    if kind == "hallo":
        return RegionAudioBlock(channels, inner, heads, int(spec.get("audio_dim", 768)), level, norm_groups)
    raise FadaError(f"parts.audio.kind: unknown kind {kind!r} (choose one of {', '.join(AUDIO_KINDS)})")
