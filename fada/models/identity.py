"""Identity tokens: a face-recognition embedding projected to a few cross-attention tokens.

``IdentityProjection`` is Hallo's ImageProjModel (IP-Adapter's image projection): one linear layer from the
embedding (InsightFace's 512-d ArcFace vector in Hallo) to ``n_tokens`` × ``dim`` and a LayerNorm per token. Both
UNets read the tokens through SD1.5's text cross-attention (``attn2``), where the text used to be. The
unconditional tokens are the projection of a zero embedding (the LayerNorm's bias pattern, not zeros).

``cfg_writer_tokens`` reproduces which identity tokens Hallo's ReferenceNet pass gives each view when it encodes
the reference and motion frames for a classifier-free-guidance batch: the views of the stacked [uncond, cond]
samples run as one batch of 2·B·V images while the 2·B token sets are tiled over it (``tokens.repeat``), so image r
gets token set r mod 2B -- with B = 1 and V = 3 the uncond sample's views read [u, c, u] and the cond sample's
[c, u, c]. The bank (and with it the motion frames both rows see) therefore mixes both identities.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class IdentityProjection(nn.Module):
    def __init__(self, embed_dim: int = 512, n_tokens: int = 4, dim: int = 768):
        super().__init__()
        self.config = {"embed_dim": int(embed_dim), "n_tokens": int(n_tokens), "dim": int(dim)}
        self.proj = nn.Linear(embed_dim, n_tokens * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, embeds: Tensor) -> Tensor:
        """(B, embed_dim) -> (B, n_tokens, dim)."""
        c = self.config
        return self.norm(self.proj(embeds).reshape(-1, c["n_tokens"], c["dim"]))

    def tokens(self, embeds: Tensor, keep=None) -> Tensor:
        """Tokens of ``embeds``; rows with ``keep`` (B,) False get the unconditional tokens (a zero embedding)."""
        if keep is not None:
            keep = torch.as_tensor(keep, device=embeds.device).bool().reshape(-1, 1)
            embeds = torch.where(keep, embeds, torch.zeros_like(embeds))
        return self(embeds)


def cfg_writer_tokens(stacked: Tensor, views: int) -> Tensor:
    """Hallo's per-view identity tokens of a guidance batch: ``stacked`` (S, N, D) token sets of the S stacked
    samples (e.g. [uncond, cond]) -> (S, views, N, D), view v of sample s reading set (s·views + v) mod S."""
    s = stacked.shape[0]
    idx = torch.arange(s * views, device=stacked.device) % s
    return stacked[idx].reshape(s, views, *stacked.shape[1:])
