"""Attention backend, reference bank, and the diffusers attention processors of both UNets.

Backend
    ``attention(q, k, v, mask=None, backend=...)`` on (B, heads, L, d) tensors: 'xformers'
    (``xformers.ops.memory_efficient_attention``, imported lazily and only where CUDA is available), 'sdpa'
    (``F.scaled_dot_product_attention``) and 'naive' (explicit softmax; the reference the tests compare with).
    ``resolve_backend('auto'|'sdpa'|'xformers')``: 'auto' = xformers where it runs (CUDA, the package, and kernels
    built for this torch: one tiny call decides), else sdpa; asking for xformers where it cannot run is a FadaError
    naming why. Nothing here imports xformers at module import time or without CUDA.

Bank (paper §3.1; docs/architecture.md)
    The ReferenceNet's spatial self-attention layers (``attn1``) write their input hidden states -- the
    LayerNorm-ed tokens -- into a dict keyed by the layer's module path inside the UNet
    (``down_blocks.0.attentions.0.transformer_blocks.0.attn1`` ...). Both nets are built from the same UNet config,
    so the denoising net's ``attn1`` of the same path reads them: its keys/values are its own tokens concatenated
    with the bank tokens of its sample (reference + motion frames, the same for every frame of the clip).

Dropped reference (``keep_ref`` False)
    The per-sample choice is made inside one batched forward (the three multi-CFG branches run as one batch of
    3B): samples that keep the reference attend over [own tokens, bank tokens]; the others over their own tokens
    only. Rather than an additive -inf mask over the bank part (which on xformers needs a materialised
    (B·F, heads, L, L+S) bias -- tens of GB at 64×64 latents), the processor partitions the batch into the two
    groups and runs one attention call per group; the result is identical to the masked attention and, for the
    dropped group, exactly the plain self-attention an SD1.5 UNet computes.

Per-forward context
    Bank, frame count and the keep/drop partition travel in an ``AttnContext`` passed as
    ``cross_attention_kwargs={"fada_ctx": ctx}``: diffusers hands these kwargs to every processor and (by
    reference) to its gradient-checkpointing calls, so a recomputation during backward sees the context of the
    forward it belongs to even when other forwards ran in between (two student passes, then one backward).
    A fresh context is made per forward; nothing is global or cleared.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fada.errors import FadaError

BACKENDS = ("auto", "sdpa", "xformers")
CTX_KEY = "fada_ctx"

_XOPS = None


def xformers_available() -> bool:
    """True when CUDA is available, the xformers package is importable and its kernels run on this torch build."""
    return xformers_unusable_reason() is None


@functools.lru_cache(maxsize=None)
def xformers_unusable_reason() -> Optional[str]:
    """None when xformers runs here, else why not (one line).

    Installed is not enough: an xformers wheel built for another torch version imports, warns that its C++/CUDA
    extensions did not load, and then every attention call fails ("No operator found"). So where CUDA and the
    package are present, one tiny fp16 attention call decides (once per process).
    """
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if importlib.util.find_spec("xformers") is None:
        return "xformers is not installed"
    return _probe_xformers()


def _probe_xformers() -> Optional[str]:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import xformers.ops as xops  # lazy: only ever imported where CUDA is present

            q = torch.zeros(1, 8, 1, 64, device="cuda", dtype=torch.float16)
            xops.memory_efficient_attention(q, q, q)
    except Exception as e:  # a mismatched build raises from its dispatcher or its extension loader
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"xformers cannot run on this torch build ({first[:160]})"
    return None


def _xformers_ops():
    global _XOPS
    if _XOPS is None:
        resolve_backend("xformers")  # raises, naming why, where it cannot run
        import xformers.ops as xops

        _XOPS = xops
    return _XOPS


def resolve_backend(name: str = "auto") -> str:
    """'auto' | 'sdpa' | 'xformers' (and 'naive', for tests) -> the concrete backend this machine runs.

    'auto' is xformers where it runs (see ``xformers_unusable_reason``), else sdpa, with a warning when xformers is
    installed beside CUDA but cannot run; an explicit 'xformers' that cannot run is a FadaError naming why.
    """
    name = str(name or "auto").lower()
    if name == "auto":
        reason = xformers_unusable_reason()
        if reason is not None and reason.startswith("xformers cannot run"):
            _warn_once(f"attention_backend 'auto' uses PyTorch SDPA: {reason}")
        return "xformers" if reason is None else "sdpa"
    if name in ("sdpa", "naive"):
        return name
    if name == "xformers":
        reason = xformers_unusable_reason()
        if reason is not None:
            raise FadaError(f"attention_backend: 'xformers': {reason}; use 'sdpa' or 'auto'")
        return "xformers"
    raise FadaError(f"attention_backend: unknown backend {name!r} (choose 'auto', 'sdpa' or 'xformers')")


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _float_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def naive_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """softmax(q kᵀ/√d + mask) v in float32 arithmetic, the reference implementation."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores + _float_mask(mask, torch.float32)
    return torch.matmul(scores.softmax(dim=-1), v.float()).to(q.dtype)


def _xformers_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
    xops = _xformers_ops()
    bias = None
    if mask is not None:
        b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        pad = (-lk) % 8  # xformers wants the bias' last dim 8-aligned in memory
        buf = torch.zeros(b, h, lq, lk + pad, dtype=q.dtype, device=q.device)
        buf[..., :lk] = _float_mask(mask, q.dtype).expand(b, h, lq, lk)
        bias = buf[..., :lk]
    out = xops.memory_efficient_attention(q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(),
                                          v.transpose(1, 2).contiguous(), attn_bias=bias)
    return out.transpose(1, 2)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, backend: str = "sdpa") -> Tensor:
    """Scaled dot-product attention on (B, heads, L, d) tensors -> (B, heads, Lq, d).

    ``mask``: bool (True = attend) or additive float, broadcastable to (B, heads, Lq, Lk). ``backend`` is a
    resolved name ('sdpa', 'xformers', 'naive'); 'auto' is resolved here. xformers falls back to sdpa for
    tensors that are not on a CUDA device.
    """
    if backend == "auto":
        backend = resolve_backend("auto")
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend == "xformers":
        if not q.is_cuda:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return _xformers_attention(q, k, v, mask)
    if backend == "naive":
        return naive_attention(q, k, v, mask)
    raise FadaError(f"attention_backend: unknown backend {backend!r}")


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, heads·d) -> (B, heads, L, d)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, L, d) -> (B, L, heads·d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


# ---------------------------------------------------------------------------------------------------------------
# Bank and per-forward context


@dataclass(eq=False)
class Bank:
    """ReferenceNet output: per attn1 layer path, tokens (B, V·L, C) of the V = 1 + M reference/motion views, and
    ``latents`` (B, V, C, h, w), the clean latents of those views (view 0 the reference), which a denoising net
    with ``unet.reference_concat`` reads as extra input channels."""

    tokens: dict[str, Tensor]
    batch_size: int
    views: int = 1
    latents: Optional[Tensor] = None

    def _map(self, fn, batch_size: Optional[int] = None) -> "Bank":
        """A bank with ``fn`` applied to every tensor (tokens and latents)."""
        return Bank({k: fn(v) for k, v in self.tokens.items()}, self.batch_size if batch_size is None else batch_size,
                    self.views, None if self.latents is None else fn(self.latents))

    def view_latents(self, views, keep: Optional[Tensor] = None) -> Tensor:
        """(B, len(views)·C, h, w): the latents of ``views`` (indices into V) side by side on channels, zeros for
        samples whose reference is dropped (``keep`` (B,) False) -- a dropped reference drops the whole bank."""
        if self.latents is None:
            raise ValueError("the bank carries no view latents (made by an old ReferenceNet?)")
        out = torch.cat([self.latents[:, v] for v in views], dim=1)
        if keep is None:
            return out
        keep = torch.as_tensor(keep, device=out.device).bool().reshape(-1).expand(out.shape[0])
        return torch.where(keep[:, None, None, None], out, torch.zeros_like(out))

    def repeat(self, n: int) -> "Bank":
        """Tile the batch n times (torch.cat([bank]*n)), matching fada.diffusion's stacked CFG branches."""
        if n == 1:
            return self
        return self._map(lambda v: torch.cat([v] * n), batch_size=self.batch_size * n)

    def to(self, *args, **kwargs) -> "Bank":
        return self._map(lambda v: v.to(*args, **kwargs))

    def detach(self) -> "Bank":
        return self._map(lambda v: v.detach())

    def join_views(self, views: int) -> "Bank":
        """B·V single-view samples, each sample's views consecutive -> a bank of B samples (B, V·L, C)."""
        if self.views != 1 or self.batch_size % views:
            raise ValueError(f"join_views({views}): needs single-view samples in multiples of {views}")
        lat = None if self.latents is None else self.latents.reshape(self.batch_size // views, views,
                                                                      *self.latents.shape[2:])
        return Bank({k: v.reshape(v.shape[0] // views, views * v.shape[1], v.shape[2]) for k, v in self.tokens.items()},
                    self.batch_size // views, views, lat)

    @staticmethod
    def concat_views(banks: "list[Bank]") -> "Bank":
        """Views of the same samples side by side: [ref bank (B, L, C), motion bank (B, M·L, C)] -> (B, (1+M)·L, C)."""
        b = banks[0].batch_size
        if any(x.batch_size != b for x in banks):
            raise ValueError("concat_views: banks must have the same batch size")
        lat = None
        if all(x.latents is not None for x in banks):
            lat = torch.cat([x.latents for x in banks], dim=1)
        return Bank({k: torch.cat([x.tokens[k] for x in banks], dim=1) for k in banks[0].tokens}, b,
                    sum(x.views for x in banks), lat)


class AttnContext:
    """What one forward tells its processors and wrapper layers (see module docstring).

    A plain class, not a dataclass: FSDP2 and autocast rebuild dataclass and dict inputs field by field on their
    way into each wrapped module, which would leave the processors writing into a copy of ``bank_out``."""

    def __init__(self, num_frames: int = 1, bank_out: Optional[dict] = None, views: int = 1,
                 bank: Optional[Bank] = None, keep_idx: Optional[Tensor] = None,
                 keep_bank_idx: Optional[Tensor] = None, drop_idx: Optional[Tensor] = None,
                 cfg_tokens: Optional[Tensor] = None, grid: Optional[tuple] = None):
        # the denoising net's audio blocks and temporal modules (net parts other than the defaults) read:
        self.audio_tokens: Optional[Tensor] = None  # (B·F, N, D) per-frame audio tokens
        self.region_masks: Optional[list] = None  # per level (B·F, L, 3) full / face / lip weights
        self.motion_scale: Optional[Tensor] = None  # (3,) or (B·F, 3) region weights
        self.motion_bank: Optional[Bank] = None  # the bank whose motion views prefix the temporal modules' frames
        self.num_frames = num_frames
        # ReferenceNet (writing): where to write, and views per sample
        self.bank_out = bank_out
        self.views = views
        # DenoisingNet (reading)
        self.bank = bank
        self.keep_idx = keep_idx  # (K,) rows of the B·F batch that attend to the bank
        self.keep_bank_idx = keep_bank_idx  # (K,) their sample index in the bank
        self.drop_idx = drop_idx  # (B·F − K,) rows that do not; None when every row keeps it
        self.cfg_tokens = cfg_tokens  # (B, n, d) CFG embedding tokens, one set per clip
        self.grid = grid  # (h, w) of the latents when the bank attention adds position codes, else None


@dataclass(frozen=True, eq=False)
class ReadSplit:
    """Which rows of a B·F frame batch read the bank: ``keep_idx`` (K,) those that do, ``keep_bank_idx`` (K,)
    their sample in the bank, ``drop_idx`` the others (None when every row reads it); ``keep_idx`` None: no row
    does. Decided once per sampling plan on the host (``read_split``), it spares each forward a ``nonzero`` --
    a wait for the GPU and a data-dependent shape that CUDA graphs cannot hold."""

    keep_idx: Optional[Tensor]
    keep_bank_idx: Optional[Tensor]
    drop_idx: Optional[Tensor]


def _split_from_rows(keep_f: Tensor, batch: int, num_frames: int, tiled: bool) -> ReadSplit:
    keep_idx = torch.nonzero(keep_f).flatten()
    if keep_idx.numel() == 0:
        return ReadSplit(None, None, None)
    bank_idx = keep_idx % batch if tiled else torch.div(keep_idx, num_frames, rounding_mode="floor")
    drop = torch.nonzero(~keep_f).flatten() if keep_idx.numel() < keep_f.numel() else None
    return ReadSplit(keep_idx, bank_idx, drop)


def read_split(keep_ref, batch: int, num_frames: int, device, tiled: bool = False) -> ReadSplit:
    """The ``ReadSplit`` of ``batch`` clips of ``num_frames`` frames whose samples keep the reference per
    ``keep_ref`` (host-side bools, one per sample), built on the host and moved to ``device`` once."""
    keep = torch.as_tensor(list(keep_ref), dtype=torch.bool).reshape(-1).expand(batch)
    sp = _split_from_rows(keep.repeat_interleave(num_frames), batch, num_frames, tiled)
    move = (lambda t: None if t is None else t.to(device))
    return ReadSplit(move(sp.keep_idx), move(sp.keep_bank_idx), move(sp.drop_idx))


def make_read_context(bank: Optional[Bank], keep_ref: Optional[Tensor], batch: int, num_frames: int,
                      device, tiled: bool = False, split: Optional[ReadSplit] = None) -> AttnContext:
    """Context for a denoising forward over ``batch`` clips of ``num_frames`` frames. ``tiled``: row r of the
    B·F batch reads bank sample r mod B instead of its own clip's (Hallo's reference read). ``split``: the
    rows' split decided beforehand (``read_split``); else it is found from ``keep_ref`` here."""
    ctx = AttnContext(num_frames=num_frames)
    if bank is None:
        return ctx
    if bank.batch_size != batch:
        raise ValueError(f"bank holds {bank.batch_size} samples but the batch has {batch}")
    if split is None:
        if keep_ref is None:
            keep = torch.ones(batch, dtype=torch.bool, device=device)
        else:
            keep = torch.as_tensor(keep_ref, device=device).bool().reshape(-1).expand(batch)
        split = _split_from_rows(keep.repeat_interleave(num_frames), batch, num_frames, tiled)
    if split.keep_idx is None:
        return ctx  # nobody reads the bank: plain self-attention everywhere
    ctx.bank = bank
    ctx.keep_idx, ctx.keep_bank_idx, ctx.drop_idx = split.keep_idx, split.keep_bank_idx, split.drop_idx
    return ctx


# ---------------------------------------------------------------------------------------------------------------
# Processors (diffusers ``Attention`` processors; signature as diffusers' AttnProcessor2_0 plus ``fada_ctx``)


class _BaseProcessor:
    def __init__(self, name: str = "", backend: str = "sdpa"):
        self.name = name
        self.backend = backend

    def _prep_mask(self, attn, attention_mask, seq_len, batch):
        if attention_mask is None:
            return None
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
        return attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

    def _finish(self, attn, out: Tensor, residual: Tensor) -> Tensor:
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _plain(self, attn, hidden_states, encoder_hidden_states, attention_mask):
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError("fada processors support token-sequence (B, L, C) attention only")
        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        mask = self._prep_mask(attn, attention_mask, context.shape[1], context.shape[0])
        q = split_heads(attn.to_q(hidden_states), attn.heads)
        k = split_heads(attn.to_k(context), attn.heads)
        v = split_heads(attn.to_v(context), attn.heads)
        out = merge_heads(attention(q, k, v, mask, self.backend)).to(q.dtype)
        return self._finish(attn, out, residual)


class PlainAttnProcessor(_BaseProcessor):
    """Self- or cross-attention through ``attention()`` (audio cross-attention of both nets)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 fada_ctx: Optional[AttnContext] = None):
        return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask)


class BankWriteProcessor(_BaseProcessor):
    """ReferenceNet attn1: writes its input (normed tokens) to ``fada_ctx.bank_out[name]``, then self-attends."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 fada_ctx: Optional[AttnContext] = None):
        if fada_ctx is not None and fada_ctx.bank_out is not None:
            n, length, c = hidden_states.shape
            fada_ctx.bank_out[self.name] = hidden_states.reshape(n // fada_ctx.views, fada_ctx.views * length, c)
        return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask)


@functools.lru_cache(maxsize=32)
def _grid_positions(h: int, w: int, dim: int) -> Tensor:
    """(h·w, dim) fixed 2-D sine-cosine position code (rows: y·w + x): half the channels code y, half x, each as
    sin/cos pairs at geometric frequencies (as ViT/MAE's 2-D sincos embedding); odd leftovers are zero."""
    quarter = dim // 4
    out = torch.zeros(h * w, dim)
    if quarter == 0:
        return out
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1)))
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (yy.reshape(-1), xx.reshape(-1)):
        ang = coord[:, None] * freq[None]
        parts += [torch.sin(ang), torch.cos(ang)]
    out[:, : 4 * quarter] = torch.cat(parts, dim=1).float()
    return out


def grid_positions(length: int, grid: tuple, dim: int, device, dtype) -> Tensor:
    """Position code of a level's ``length`` tokens whose latent grid is ``grid`` = (h, w) at full resolution."""
    h, w = grid
    f = round((h * w / length) ** 0.5)
    if f < 1 or (h // f) * (w // f) != length:
        raise ValueError(f"cannot place {length} tokens on a {h}x{w} latent grid")
    return _grid_positions(h // f, w // f, dim).to(device=device, dtype=dtype)


class BankReadProcessor(_BaseProcessor):
    """DenoisingNet attn1: keys/values = own tokens ++ bank tokens for rows that keep the reference.

    ``read_views``: how many leading views of the bank are read (None: all; 1: the reference only, when the motion
    views go to the temporal modules instead).

    When the context carries a ``grid`` (CPU-scale nets trained from scratch, ``unet.bank_positions``), a fixed
    2-D position code is added to the query and key inputs of the frame's and of every bank view's tokens, so
    that "read the reference at the same place" is learnable at once (SD1.5's attention has no position input)."""

    read_views: Optional[int] = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 fada_ctx: Optional[AttnContext] = None):
        bank = None if fada_ctx is None else fada_ctx.bank
        if bank is None or encoder_hidden_states is not None or attention_mask is not None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask)
        if self.name not in bank.tokens:
            raise KeyError(f"reference bank has no tokens for layer {self.name!r}")
        residual = hidden_states
        h = attn.heads
        ref = bank.tokens[self.name].to(hidden_states.dtype)
        views = bank.views
        if self.read_views is not None and self.read_views < views:
            ref = ref[:, : self.read_views * (ref.shape[1] // views)]
            views = self.read_views
        if fada_ctx.grid is not None:
            pos = grid_positions(hidden_states.shape[1], fada_ctx.grid, hidden_states.shape[2],
                                 hidden_states.device, hidden_states.dtype)
            qk_in = hidden_states + pos
            q, k = attn.to_q(qk_in), attn.to_k(qk_in)
            kb = attn.to_k(ref + pos.repeat(views, 1)).index_select(0, fada_ctx.keep_bank_idx)
        else:
            q, k = attn.to_q(hidden_states), attn.to_k(hidden_states)
            kb = attn.to_k(ref).index_select(0, fada_ctx.keep_bank_idx)  # (K, S, inner): once per sample
        v = attn.to_v(hidden_states)
        vb = attn.to_v(ref).index_select(0, fada_ctx.keep_bank_idx)
        ki = fada_ctx.keep_idx
        if fada_ctx.drop_idx is None:
            out = attention(split_heads(q, h), split_heads(torch.cat([k, kb], 1), h),
                            split_heads(torch.cat([v, vb], 1), h), None, self.backend)
            out = merge_heads(out)
        else:
            di = fada_ctx.drop_idx
            o_keep = attention(split_heads(q.index_select(0, ki), h),
                               split_heads(torch.cat([k.index_select(0, ki), kb], 1), h),
                               split_heads(torch.cat([v.index_select(0, ki), vb], 1), h), None, self.backend)
            o_drop = attention(split_heads(q.index_select(0, di), h), split_heads(k.index_select(0, di), h),
                               split_heads(v.index_select(0, di), h), None, self.backend)
            o_keep, o_drop = merge_heads(o_keep), merge_heads(o_drop)
            out = o_keep.new_zeros(q.shape[0], q.shape[1], o_keep.shape[-1])
            out = out.index_copy(0, ki, o_keep).index_copy(0, di, o_drop)
        return self._finish(attn, out.to(q.dtype), residual)


def install_processors(unet, attn1_cls, backend: str = "sdpa") -> None:
    """Give every Attention of a UNet2DConditionModel a fada processor (attn1: ``attn1_cls``; others: plain).

    Processor names are the module paths inside ``unet`` at install time (before any wrapping), so the
    ReferenceNet's writers and the DenoisingNet's readers agree on bank keys.
    """
    from diffusers.models.attention_processor import Attention

    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            cls = attn1_cls if name.endswith("attn1") else PlainAttnProcessor
            module.set_processor(cls(name, backend))


def set_processor_backend(module: torch.nn.Module, backend: str) -> None:
    """Set the (resolved) backend on every fada processor and fada layer below ``module``."""
    for m in module.modules():
        proc = getattr(m, "processor", None)
        if isinstance(proc, _BaseProcessor):
            proc.backend = backend
        if getattr(m, "_fada_attention_layer", False):
            m.attention_backend = backend
