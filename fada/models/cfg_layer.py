"""The student's CFG layer (paper §3.3): cross-attention from every spatial token to the n CFG embedding tokens
(Eq. 10's Emb_cfg), zero-initialised output projection, residual.

Computed in folded form. Emb_cfg is one set of n tokens per clip (the same at every frame, position and step),
so per head h the query and key projections meet in one (C × n) matrix and the value and output projections in
one (n × C) matrix:

    q_h k_hᵀ/√d = LN(x) · [W_q,hᵀ K_hᵀ / √d]            (C × n per head; LN's γ and β folded in too)
    to_out(Σ_h P_h V_h) = Σ_h P_h · [V_h W_out,hᵀ] + b    (n × C per head)

Per spatial token that is 2·C·(heads·n) multiply-adds instead of the 2·C² of ``to_q`` and ``to_out`` (10× to 40×
fewer at SD1.5's widths, 4 tokens and 8 heads); the folded matrices cost C²·n per clip. The result is the same
function (``reference_forward`` computes it the textbook way; the tests compare the two), so a student trained
either way samples the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attention, merge_heads, split_heads
from .temporal_modules import zero_linear

__all__ = ["CFGCrossAttention"]


class CFGCrossAttention(nn.Module):
    """CFG layer: cross-attention from the spatial tokens to the CFG embedding tokens (Eq. 10's Emb_cfg as given,
    or layer-normalised with ``normalize``); zero-init output; residual."""

    _fada_attention_layer = True

    def __init__(self, channels: int, heads: int, cfg_dim: int, normalize: bool = False):
        super().__init__()
        self.heads = int(heads)
        self.attention_backend = "sdpa"
        self.norm = nn.LayerNorm(channels)
        # Eq. 10 builds Emb_cfg linear in (cfg_a, cfg_r); a LayerNorm on it would erase that scale structure (the
        # embeddings of (6.5, 2.0) and (8, 2.46) differ by 23.5 % before a norm, 2.2 % after). Off: the paper.
        self.norm_cfg = nn.LayerNorm(cfg_dim) if normalize else nn.Identity()
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(cfg_dim, channels, bias=False)
        self.to_v = nn.Linear(cfg_dim, channels, bias=False)
        self.to_out = zero_linear(channels, channels)

    def folded(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per clip tokens (B, n, d) -> (A (B, C, H·n), a (B, 1, H·n), Bm (B, H·n, C)): scores = x̂·A + a for
        the normalised tokens x̂ (LayerNorm without its affine), output = softmax-per-head(scores)·Bm + b_out.
        Built in at least float32 (they are small) and cast to the weights' dtype."""
        w_dtype = self.to_q.weight.dtype
        cd = torch.promote_types(w_dtype, torch.float32)
        ctx = self.norm_cfg(tokens.to(w_dtype)).to(cd)
        b, n, _ = ctx.shape
        c, h = self.to_q.weight.shape[0], self.heads
        d = c // h
        k = (ctx @ self.to_k.weight.to(cd).t()).view(b, n, h, d)          # (B, n, H, d)
        v = (ctx @ self.to_v.weight.to(cd).t()).view(b, n, h, d)
        wq = self.to_q.weight.to(cd).view(h, d, -1)                        # (H, d, C_in)
        # A[b, c, h, j] = Σ_e Wq[h, e, c] K[b, j, h, e] / √d
        a = torch.einsum("hec,bjhe->bchj", wq, k) / math.sqrt(d)
        gamma, beta = self.norm.weight.to(cd), self.norm.bias.to(cd)
        bias = torch.einsum("c,bchj->bhj", beta, a).reshape(b, 1, h * n)
        a = (a * gamma[None, :, None, None]).reshape(b, -1, h * n)
        wo = self.to_out.weight.to(cd).view(-1, h, d)                      # (C_out, H, d)
        bm = torch.einsum("bjhe,ohe->bhjo", v, wo).reshape(b, h * n, -1)    # (B, H·n, C_out)
        return a.to(w_dtype), bias.to(w_dtype), bm.to(w_dtype)

    def forward(self, h: Tensor, tokens: Tensor, frames: int = 1) -> Tensor:
        """h (B·F, C, hh, ww); tokens (B, n, d), one set per clip of ``frames`` frames (or (B·F, n, d) with
        frames 1)."""
        bf, c, hh, ww = h.shape
        b, n = tokens.shape[0], tokens.shape[1]
        if b * frames != bf:
            raise ValueError(f"CFG layer: {b} token sets for {frames} frames each, but the batch has {bf} frames")
        a, bias, bm = self.folded(tokens)
        x = h.reshape(b, frames, c, hh * ww).transpose(2, 3).reshape(b, frames * hh * ww, c)
        x = F.layer_norm(x, (c,), eps=self.norm.eps)
        p = torch.baddbmm(bias.to(x.dtype), x, a.to(x.dtype))               # (B, F·L, H·n)
        p = p.view(b, -1, self.heads, n).softmax(dim=-1).view(b, -1, self.heads * n)
        y = torch.bmm(p, bm.to(x.dtype)) + self.to_out.bias.to(x.dtype)     # (B, F·L, C)
        return h + y.view(bf, hh * ww, c).transpose(1, 2).reshape(bf, c, hh, ww)

    def reference_forward(self, h: Tensor, tokens: Tensor, frames: int = 1) -> Tensor:
        """The same layer computed as written (project, attend, project): what ``forward`` must equal."""
        bf, c, hh, ww = h.shape
        tokens = tokens.repeat_interleave(frames, dim=0)
        x = h.reshape(bf, c, hh * ww).transpose(1, 2)
        ctx = self.norm_cfg(tokens.to(x.dtype))
        q = split_heads(self.to_q(self.norm(x)), self.heads)
        k, v = split_heads(self.to_k(ctx), self.heads), split_heads(self.to_v(ctx), self.heads)
        y = self.to_out(merge_heads(attention(q, k, v, None, self.attention_backend)))
        return h + y.transpose(1, 2).reshape(bf, c, hh, ww)
