"""How the student is told the multi-CFG scales (paper §3.3, Eq. 10).

Modes (``CFGConfig.mode``):

- ``tokens``: three learnable token sets γ_a, γ_r, γ_b (n_tok × d, d = the UNet's cross-attention width) mixed by
  Eq. 10, Emb_cfg = cfg_a·(γ_a − γ_r) + cfg_r·(γ_r − γ_b) + γ_b, read by the CFG layers of the denoising net.
- ``layer``: the same CFG layers, reading n_tok tokens made by an MLP from a sinusoidal embedding of
  (cfg_a, cfg_r) (the "layer without tokens" ablation).
- ``time_embed``: the sinusoidal embedding of (cfg_a, cfg_r) enters the timestep embedding through diffusers'
  ``time_cond_proj_dim`` / ``timestep_cond`` (LCM's ω-conditioning); the UNet's ``cond_proj`` starts at zero so an
  SD1.5 init is undisturbed.
- ``none``: nothing (the teacher and the Balanced student).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from fada.errors import FadaError

CFG_MODES = ("none", "time_embed", "layer", "tokens")
TIME_COND_DIM = 256  # width of the (cfg_a, cfg_r) embedding fed to the UNet's cond_proj (LCM uses 256)
SCALE_EMBED_DIM = 256  # width of the (cfg_a, cfg_r) embedding fed to the 'layer' MLP


def guidance_scale_embedding(w: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of guidance scales (B,) -> (B, dim), as LCM's ``get_guidance_scale_embedding``."""
    w = w.reshape(-1).float() * 1000.0
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    args = w[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def cfg_scale_embedding(scales: Tensor, dim: int) -> Tensor:
    """(B, 2) (cfg_a, cfg_r) -> (B, dim): the two scales' sinusoidal embeddings side by side."""
    scales = torch.as_tensor(scales).reshape(-1, 2)
    half = dim // 2
    return torch.cat([guidance_scale_embedding(scales[:, 0], half),
                      guidance_scale_embedding(scales[:, 1], dim - half)], dim=1)


def _per_sample(x, like: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device).reshape(-1)


class CFGTokens(nn.Module):
    """Learnable γ_a, γ_r, γ_b (n_tokens × dim) and their Eq. 10 mix."""

    def __init__(self, n_tokens: int, dim: int, init_std: float = 0.02):
        super().__init__()
        self.n_tokens, self.dim = int(n_tokens), int(dim)
        self.gamma_a = nn.Parameter(torch.randn(n_tokens, dim) * init_std)
        self.gamma_r = nn.Parameter(torch.randn(n_tokens, dim) * init_std)
        self.gamma_b = nn.Parameter(torch.randn(n_tokens, dim) * init_std)

    def embedding(self, cfg_a, cfg_r) -> Tensor:
        """Per-sample scales (B,) (or floats) -> Emb_cfg (B, n_tokens, dim)."""
        a = _per_sample(cfg_a, self.gamma_a)[:, None, None]
        r = _per_sample(cfg_r, self.gamma_a)[:, None, None]
        a, r = torch.broadcast_tensors(a, r)
        # Eq. 10
        return a * (self.gamma_a - self.gamma_r) + r * (self.gamma_r - self.gamma_b) + self.gamma_b

    def forward(self, scales: Tensor) -> Tensor:
        scales = torch.as_tensor(scales).reshape(-1, 2)
        return self.embedding(scales[:, 0], scales[:, 1])


class CFGScaleMLP(nn.Module):
    """'layer' mode: sinusoidal embedding of (cfg_a, cfg_r) -> MLP -> (B, n_tokens, dim)."""

    def __init__(self, n_tokens: int, dim: int, embed_dim: int = SCALE_EMBED_DIM):
        super().__init__()
        self.n_tokens, self.dim, self.embed_dim = int(n_tokens), int(dim), int(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, dim), nn.SiLU(), nn.Linear(dim, n_tokens * dim))

    def forward(self, scales: Tensor) -> Tensor:
        w = self.mlp[0].weight
        emb = cfg_scale_embedding(torch.as_tensor(scales, device=w.device), self.embed_dim).to(w.dtype)
        return self.mlp(emb).reshape(-1, self.n_tokens, self.dim)


class CFGConditioning(nn.Module):
    """The student's CFG-scale input for one mode: ``forward(scales (B,2)) -> (cfg_tokens, timestep_cond)``.

    cfg_tokens (B, n_tokens, dim) for 'tokens'/'layer' (read by the CFG layers), timestep_cond (B, time_cond_dim)
    for 'time_embed' (the UNet's ``timestep_cond``); the other is None.
    """

    def __init__(self, mode: str, n_tokens: int = 4, dim: int = 768, time_cond_dim: int = TIME_COND_DIM):
        super().__init__()
        if mode not in CFG_MODES:
            raise FadaError(f"cfg.mode: unknown mode {mode!r} (choose one of {', '.join(CFG_MODES)})")
        self.mode, self.n_tokens, self.dim, self.time_cond_dim = mode, int(n_tokens), int(dim), int(time_cond_dim)
        self.tokens = CFGTokens(n_tokens, dim) if mode == "tokens" else None
        self.mlp = CFGScaleMLP(n_tokens, dim) if mode == "layer" else None

    @property
    def config(self) -> dict:
        return {"mode": self.mode, "n_tokens": self.n_tokens, "dim": self.dim, "time_cond_dim": self.time_cond_dim}

    @property
    def uses_layers(self) -> bool:
        return self.mode in ("tokens", "layer")

    def forward(self, scales: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
        if self.mode == "tokens":
            return self.tokens(scales), None
        if self.mode == "layer":
            return self.mlp(scales), None
        if self.mode == "time_embed":
            return None, cfg_scale_embedding(scales, self.time_cond_dim)
        return None, None
