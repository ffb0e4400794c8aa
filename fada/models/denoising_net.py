"""Denoising net (paper §3.1; docs/architecture.md): the SD1.5 UNet run on every frame of a clip, extended per
spatial transformer with

1. spatial self-attention whose keys/values are its own tokens ++ the bank tokens (reference + motion frames)
   of its clip (``attn1``; dropped for samples with ``keep_ref`` False) -- ``BankReadProcessor``;
2. audio cross-attention: SD1.5's text cross-attention (``attn2``) reads per-frame audio tokens (B·F, N, D) as
   its ``encoder_hidden_states``; dropped audio = all-zero tokens. Re-using ``attn2`` keeps an SD1.5 init
   undisturbed: given the same ``encoder_hidden_states`` the net computes exactly what SD1.5 computes;
3. CFG layer (student, cfg.mode 'tokens' or 'layer'): cross-attention to the CFG embedding tokens, zero-initialised
   output projection, residual;
4. temporal self-attention across the F frames of each spatial position (sinusoidal frame position added to the
   normed tokens), zero-initialised output projection, residual.

3 and 4 live in ``SpatialTemporalBlock``, which wraps each ``Transformer2DModel`` (down, mid and up blocks): they
run after the spatial transformer (attn1 → attn2 → FF), i.e. after each audio layer, as the paper places them.
All new layers start as the identity, so the net equals the SD1.5 UNet frame by frame at init.

Other kinds of these parts are chosen by the ``parts`` sub-config (``net_parts``; saved with the net): an
AnimateDiff motion module as the temporal layer, fed the bank's motion views as leading frames
(``temporal_modules``); a region-masked audio block after the spatial transformer, with ``attn2`` reading identity
tokens instead (``audio_blocks``, ``identity``); attn1 reading only the bank's reference view; a face locator whose
features are added after ``conv_in`` (``face_locator``). Hallo's net is ``net_parts.HALLO_PARTS``. Its inputs
travel in one ``Conditioning``; the positional ``forward`` arguments are the default net's.

``reference_concat`` / ``motion_concat`` (CPU-scale options): the reference's (and the latest motion frame's) clean
latents (``Bank.latents``; zeros where the reference is dropped) are concatenated to every frame's noisy latents as extra input
channels, through a wider ``conv_in`` whose new input channels start at zero (InstructPix2Pix's way of adding
image channels to a UNet). A from-scratch net then has the reference at full resolution and at the same place as
the frame it draws; the bank attention alone, at the coarse levels of a tiny net, carried almost nothing of it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .attention import (AttnContext, Bank, BankReadProcessor, install_processors, make_read_context,
                        set_processor_backend)
from .audio_blocks import build_audio_block, hallo_audio_layout
from .cfg_layer import CFGCrossAttention
from .conditioning import Conditioning
from .face_locator import FaceLocator
from .net_parts import is_default, resolve_parts
from .temporal_modules import TemporalAttention, build_temporal, sinusoidal_positions

__all__ = ["DenoisingNet", "SpatialTemporalBlock", "CFGCrossAttention", "TemporalAttention", "sinusoidal_positions"]


class SpatialTemporalBlock(nn.Module):
    """A UNet ``Transformer2DModel`` (``spatial``) followed by the optional audio block, the optional CFG layer and
    the temporal module (``temporal``: a ``TemporalAttention`` of ``temporal_heads`` / ``max_frames`` unless given).

    Called by diffusers' blocks exactly like the transformer it wraps; reads ``fada_ctx`` (frame count, audio
    tokens, region masks, CFG tokens, the bank of the motion prefix) from ``cross_attention_kwargs``.
    ``bank_key``: the bank entry of its first attn1 (the motion views a prefix-reading temporal module gets).
    """

    def __init__(self, spatial: nn.Module, temporal_heads: int, max_frames: int, cfg_dim: Optional[int],
                 cfg_norm: bool = False, *, temporal: Optional[nn.Module] = None, audio: Optional[nn.Module] = None,
                 bank_key: Optional[str] = None, motion_prefix: bool = True):
        super().__init__()
        channels = int(spatial.config.in_channels)
        attn1 = spatial.transformer_blocks[0].attn1
        self.spatial = spatial
        self.audio = audio
        self.cfg = CFGCrossAttention(channels, attn1.heads, cfg_dim, cfg_norm) if cfg_dim else None
        self.temporal = temporal if temporal is not None else TemporalAttention(channels, temporal_heads, max_frames)
        self.bank_key = bank_key
        self.motion_prefix = bool(motion_prefix) and getattr(self.temporal, "reads_motion_prefix", False)
        self.gradient_checkpointing = False

    @property
    def config(self):
        return self.spatial.config

    def _ckpt(self, fn, *args):
        func = getattr(self, "_gradient_checkpointing_func", None)
        if func is not None:
            return func(fn, *args)
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)

    def _prefix(self, ctx: Optional[AttnContext]) -> Optional[Tensor]:
        """(B, M, L, C) motion-view tokens of this layer's bank entry, or None (no bank, or no motion views)."""
        bank = None if ctx is None else ctx.motion_bank
        if not self.motion_prefix or bank is None or bank.views < 2:
            return None
        tok = bank.tokens[self.bank_key]
        b, vl, c = tok.shape
        length = vl // bank.views
        return tok[:, length:].reshape(b, bank.views - 1, length, c)

    def forward(self, hidden_states, encoder_hidden_states=None, cross_attention_kwargs=None, return_dict=True,
                **kwargs):
        from diffusers.models.transformers.transformer_2d import Transformer2DModelOutput

        h = self.spatial(hidden_states, encoder_hidden_states=encoder_hidden_states,
                         cross_attention_kwargs=cross_attention_kwargs, return_dict=False, **kwargs)[0]
        ctx: Optional[AttnContext] = (cross_attention_kwargs or {}).get("fada_ctx")
        frames = 1 if ctx is None else ctx.num_frames
        ckpt = self.gradient_checkpointing and torch.is_grad_enabled()

        def run(fn, *args):
            return self._ckpt(fn, *args) if ckpt else fn(*args)

        if self.audio is not None and ctx is not None and ctx.audio_tokens is not None:
            masks = None if ctx.region_masks is None else ctx.region_masks[self.audio.level]
            h = run(self.audio, h, ctx.audio_tokens, masks, ctx.motion_scale)
        if self.cfg is not None and ctx is not None and ctx.cfg_tokens is not None:
            h = run(self.cfg, h, ctx.cfg_tokens, frames)
        if self.motion_prefix:
            h = run(self.temporal, h, frames, self._prefix(ctx))
        else:
            h = run(self.temporal, h, frames)
        return Transformer2DModelOutput(sample=h) if return_dict else (h,)


def _widen_conv_in(unet, in_channels: int) -> None:
    """Give ``unet.conv_in`` ``in_channels`` inputs: the existing weights on the first ones, zeros on the new ones
    (the UNet's output is unchanged at init, as for an SD1.5 init)."""
    old = unet.conv_in
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=int(in_channels))


def _transformer_lists(unet):
    """[(path, attentions ModuleList)] of the down, mid and up blocks that have spatial transformers."""
    blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)] + [("mid_block", unet.mid_block)]
    blocks += [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    return [(f"{name}.attentions", b.attentions) for name, b in blocks
            if b is not None and getattr(b, "attentions", None) is not None]


class DenoisingNet(nn.Module):
    """The per-frame UNet with bank attention, audio cross-attention, CFG layers and temporal layers (of the kinds
    ``parts`` names; see ``net_parts``)."""

    def __init__(self, unet, temporal_heads: int = 8, max_frames: int = 32, cfg_dim: Optional[int] = None,
                 time_cond_dim: Optional[int] = None, attention_backend: str = "sdpa", bank_positions: bool = False,
                 reference_concat: bool = False, motion_concat: bool = False, cfg_norm: bool = False,
                 parts: Optional[dict] = None):
        super().__init__()
        self.parts = resolve_parts(parts)
        self.cfg_norm = bool(cfg_norm)
        self.bank_positions = bool(bank_positions)
        self.reference_concat, self.motion_concat = bool(reference_concat), bool(motion_concat)
        self.latent_channels = int(unet.config.out_channels)
        if self.concat_views and int(unet.config.in_channels) == self.latent_channels:
            _widen_conv_in(unet, (1 + len(self.concat_views)) * self.latent_channels)
        self.temporal_heads, self.max_frames = int(temporal_heads), int(max_frames)
        self.cfg_dim = int(cfg_dim) if cfg_dim else None
        if time_cond_dim and unet.time_embedding.cond_proj is None:
            # 'time_embed' mode: LCM-style ω-conditioning through diffusers' timestep_cond, starting at zero
            te = unet.time_embedding
            te.cond_proj = nn.Linear(int(time_cond_dim), te.linear_1.in_features, bias=False)
            nn.init.zeros_(te.cond_proj.weight)
            unet.register_to_config(time_cond_proj_dim=int(time_cond_dim))
        self.unet = unet
        install_processors(self.unet, BankReadProcessor, attention_backend)
        if self.parts["bank_read"] == "reference":
            for m in unet.modules():
                if isinstance(getattr(m, "processor", None), BankReadProcessor):
                    m.processor.read_views = 1
        self._wrap_transformers(unet, temporal_heads, max_frames)
        fl = self.parts["face_locator"]
        self.face_locator = None if fl is None else FaceLocator(unet.config.block_out_channels[0], **fl)
        self.set_attention_backend(attention_backend)

    def _wrap_transformers(self, unet, temporal_heads: int, max_frames: int) -> None:
        temporal, audio = self.parts["temporal"], self.parts["audio"]
        layout = hallo_audio_layout(unet) if audio["kind"] == "hallo" else {}
        for path, attentions in _transformer_lists(unet):
            for i, tr in enumerate(attentions):
                channels, heads = int(tr.config.in_channels), tr.transformer_blocks[0].attn1.heads
                inner, level = layout.get(f"{path}.{i}", (channels, 0))
                attentions[i] = SpatialTemporalBlock(
                    tr, temporal_heads, max_frames, self.cfg_dim, self.cfg_norm,
                    temporal=build_temporal(temporal, channels, temporal_heads, max_frames),
                    audio=build_audio_block(audio, channels, inner, heads, level, int(unet.config.norm_num_groups)),
                    bank_key=f"{path}.{i}.transformer_blocks.0.attn1",
                    motion_prefix=bool(temporal.get("motion_prefix", False)))

    def part_config(self) -> Optional[dict]:
        """The ``parts`` sub-config as saved (None for the default net, whose folders never had one)."""
        return None if is_default(self.parts) else self.parts

    def base_unet_config(self) -> dict:
        """The UNet config as the ReferenceNet's twin and as saved: without the added input channels."""
        from .loading import unet_config_dict

        cfg = unet_config_dict(self.unet)
        cfg["in_channels"] = self.latent_channels
        return cfg

    @property
    def concat_views(self) -> tuple:
        """Bank views given as input channels: 0 the reference (``reference_concat``), -1 the latest motion frame
        (``motion_concat``; the reference itself at a video's start)."""
        return ((0,) if self.reference_concat else ()) + ((-1,) if self.motion_concat else ())

    def reference_channels(self, bank: Optional[Bank], keep_ref: Optional[Tensor], f: int, like: Tensor) -> Tensor:
        """(B·F, V·C, h, w) latents of the ``concat_views`` per frame: zeros where the reference (and with it the
        bank) is dropped, or where there is no bank."""
        if bank is None:
            return like.new_zeros(like.shape[0], len(self.concat_views) * like.shape[1], *like.shape[2:])
        return bank.view_latents(self.concat_views, keep_ref).to(like.dtype).repeat_interleave(f, dim=0)

    @property
    def time_cond_dim(self) -> Optional[int]:
        cp = self.unet.time_embedding.cond_proj
        return None if cp is None else int(cp.in_features)

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def audio_dim(self) -> int:
        """Width of the audio tokens the net reads (its audio blocks', or attn2's)."""
        if self.parts["audio"]["kind"] == "hallo":
            return int(self.parts["audio"]["audio_dim"])
        return self.cross_attention_dim

    def set_attention_backend(self, backend: str) -> None:
        set_processor_backend(self, backend)

    def new_layer_names(self) -> list[str]:
        """Parameter names of the layers SD1.5 does not have (temporal, CFG, cond_proj, audio blocks, face
        locator)."""
        return [n for n, _ in self.named_parameters()
                if ".temporal." in n or ".cfg." in n or "time_embedding.cond_proj" in n or ".audio." in n
                or n.startswith("face_locator.")]

    def forward(self, z: Tensor, t: Tensor, audio_tokens: Optional[Tensor] = None, bank: Optional[Bank] = None,
                keep_ref: Optional[Tensor] = None, cfg_tokens: Optional[Tensor] = None,
                timestep_cond: Optional[Tensor] = None, *, cond: Optional[Conditioning] = None) -> Tensor:
        """z (B, C, F, h, w); t (B,) train timesteps; audio_tokens (B, F, N, D) (zeros where audio is dropped);
        bank from the ReferenceNet (batch B) or None; keep_ref (B,) bool; cfg_tokens (B, n, d);
        timestep_cond (B, k) -> eps (B, C, F, h, w). ``cond``: all of these (and what other parts read) in one
        ``Conditioning``, instead of the positional arguments."""
        if cond is None:
            if audio_tokens is None:
                raise ValueError("DenoisingNet: pass audio_tokens (or a Conditioning as cond)")
            cond = Conditioning(audio_tokens, bank, keep_ref, cfg_tokens=cfg_tokens, timestep_cond=timestep_cond)
        if z.ndim != 5:
            raise ValueError(f"z must be (B, C, F, h, w), got {tuple(z.shape)}")
        b, c, f, h, w = z.shape
        audio_tokens, bank, keep_ref = cond.audio_tokens, cond.bank, cond.keep_ref
        if bank is not None and self.parts["bank_dtype"] is not None:
            dt = getattr(torch, self.parts["bank_dtype"])
            bank = Bank({k: v.to(dt) for k, v in bank.tokens.items()}, bank.batch_size, bank.views, bank.latents)
        if audio_tokens.shape[:2] != (b, f):
            raise ValueError(f"audio_tokens must be (B={b}, F={f}, N, D), got {tuple(audio_tokens.shape)}")
        x = z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        if self.concat_views:
            x = torch.cat([x, self.reference_channels(bank, keep_ref, f, x)], dim=1)
        t = torch.as_tensor(t, device=z.device)
        t = (t.expand(b) if t.ndim == 0 else t.reshape(b)).repeat_interleave(f)
        audio = audio_tokens.reshape(b * f, *audio_tokens.shape[2:]).to(z.dtype)
        ctx = make_read_context(bank, keep_ref, b, f, z.device, tiled=self.parts["bank_pairing"] == "tiled",
                                split=cond.read_split)
        ctx.grid = (h, w) if self.bank_positions else None
        if self.parts["attn2"] == "identity":
            if cond.identity_tokens is None:
                raise ValueError("this denoising net's cross-attention reads identity tokens: pass identity_tokens")
            enc = cond.identity_tokens.to(z.dtype).repeat_interleave(f, dim=0)
        else:
            enc = audio
        if self.parts["audio"]["kind"] != "attn2":
            ctx.audio_tokens = audio
            if cond.region_masks is not None:
                ctx.region_masks = [m.to(z.dtype).reshape(b * f, *m.shape[2:]) for m in cond.region_masks]
            if cond.motion_scale is not None:
                ms = torch.as_tensor(cond.motion_scale, device=z.device, dtype=z.dtype)
                ctx.motion_scale = ms if ms.ndim == 1 else ms.reshape(b, 3).repeat_interleave(f, dim=0)
        ctx.motion_bank = bank
        if cond.cfg_tokens is not None and self.cfg_dim:
            ctx.cfg_tokens = cond.cfg_tokens  # (B, n, d): one set per clip (cfg_layer folds it per clip)
        timestep_cond = cond.timestep_cond
        if timestep_cond is not None:
            if self.time_cond_dim is None:
                raise ValueError("this denoising net has no time_cond_proj (cfg.mode is not 'time_embed')")
            timestep_cond = timestep_cond.to(device=z.device, dtype=z.dtype).repeat_interleave(f, dim=0)
        with self._added_after_conv_in(self._face_features(cond, b, f, z)):
            out = self.unet(x, t, encoder_hidden_states=enc, timestep_cond=timestep_cond,
                            cross_attention_kwargs={"fada_ctx": ctx}, return_dict=False)[0]
        return out.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)

    def _face_features(self, cond: Conditioning, b: int, f: int, like: Tensor) -> Optional[Tensor]:
        """(B·F, C0, h, w) face-locator features of every frame, or None."""
        feats = cond.face_features
        if feats is None:
            return None
        feats = feats.to(like.dtype)
        if feats.ndim == 4:
            return feats.repeat_interleave(f, dim=0)
        return feats.transpose(1, 2).reshape(b * f, *feats.shape[1:2], *feats.shape[3:])

    @contextmanager
    def _added_after_conv_in(self, feats: Optional[Tensor]):
        """Add ``feats`` to ``conv_in``'s output for the forwards run inside (a hook, so the UNet's keys and its
        diffusers forward stay as they are; conv_in is never recomputed by gradient checkpointing)."""
        if feats is None:
            yield
            return
        handle = self.unet.conv_in.register_forward_hook(lambda _m, _i, out: out + feats)
        try:
            yield
        finally:
            handle.remove()
