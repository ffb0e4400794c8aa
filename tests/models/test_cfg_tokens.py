"""CFG conditioning: Eq. 10 on hand-made tokens, and the 'layer' / 'time_embed' embeddings."""

from __future__ import annotations

import pytest
import torch

from fada.errors import FadaError
from fada.models.cfg_tokens import (CFGConditioning, CFGScaleMLP, CFGTokens, cfg_scale_embedding,
                                    guidance_scale_embedding)


def _handmade():
    tok = CFGTokens(n_tokens=2, dim=3)
    ga = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    gr = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    gb = torch.tensor([[0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    with torch.no_grad():
        tok.gamma_a.copy_(ga)
        tok.gamma_r.copy_(gr)
        tok.gamma_b.copy_(gb)
    return tok, ga, gr, gb


def test_eq10_corners_and_values():
    tok, ga, gr, gb = _handmade()
    assert torch.equal(tok.embedding(0.0, 0.0)[0], gb)  # no guidance at all: the unconditional token
    assert torch.equal(tok.embedding(0.0, 1.0)[0], gr)  # reference guidance 1, audio 0
    assert torch.equal(tok.embedding(1.0, 1.0)[0], ga)  # both 1: the fully conditional token
    # a worked value, computed by hand: cfg_a=6.5, cfg_r=2.0
    # row 0: 6.5*([1,0,0]-[0,1,0]) + 2*([0,1,0]-[0,0,1]) + [0,0,1] = [6.5, -4.5, -1]
    # row 1: 6.5*([0,2,0]-[0,0,3]) + 2*([0,0,3]-[5,0,0]) + [5,0,0] = [-5, 13, -13.5]
    expect = torch.tensor([[6.5, -4.5, -1.0], [-5.0, 13.0, -13.5]])
    assert torch.allclose(tok.embedding(6.5, 2.0)[0], expect)


def test_eq10_per_sample_and_affine_in_scales():
    tok, ga, gr, gb = _handmade()
    a = torch.tensor([0.0, 1.0, 6.5, -2.0])
    r = torch.tensor([0.0, 2.5, 2.0, 3.0])
    emb = tok.embedding(a, r)
    assert emb.shape == (4, 2, 3)
    for i in range(4):
        assert torch.allclose(emb[i], tok.embedding(float(a[i]), float(r[i]))[0])
    # affine: E(a, r) - E(0, 0) is linear in (a, r)
    e0 = tok.embedding(0.0, 0.0)
    lin = lambda x, y: tok.embedding(x, y) - e0  # noqa: E731
    assert torch.allclose(lin(3.0, 5.0), lin(1.0, 2.0) + lin(2.0, 3.0), atol=1e-6)
    assert torch.allclose(lin(2.5, 0.0), 2.5 * (ga - gr), atol=1e-6)
    assert torch.allclose(lin(0.0, 4.0), 4.0 * (gr - gb), atol=1e-6)
    # forward takes (B, 2) scales
    assert torch.allclose(tok(torch.stack([a, r], 1)), emb)


def test_eq10_gradients_reach_all_three_sets():
    tok = CFGTokens(4, 8)
    tok(torch.tensor([[6.5, 2.0]])).sum().backward()
    for g in (tok.gamma_a, tok.gamma_r, tok.gamma_b):
        assert g.grad is not None and g.grad.abs().sum() > 0


def test_scale_embeddings():
    e = guidance_scale_embedding(torch.tensor([1.0, 2.0]), 16)
    assert e.shape == (2, 16) and not torch.allclose(e[0], e[1])
    s = cfg_scale_embedding(torch.tensor([[6.5, 2.0], [6.5, 2.5], [5.0, 2.0]]), 32)
    assert s.shape == (3, 32)
    assert torch.allclose(s[0, :16], s[1, :16]) and not torch.allclose(s[0, 16:], s[1, 16:])
    assert not torch.allclose(s[0, :16], s[2, :16]) and torch.allclose(s[0, 16:], s[2, 16:])


def test_layer_mode_mlp():
    mlp = CFGScaleMLP(n_tokens=3, dim=8)
    out = mlp(torch.tensor([[6.5, 2.0], [4.0, 2.0]]))
    assert out.shape == (2, 3, 8)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("mode,tokens,tcond", [("tokens", (2, 4, 8), None), ("layer", (2, 4, 8), None),
                                               ("time_embed", None, (2, 256)), ("none", None, None)])
def test_conditioning_modes(mode, tokens, tcond):
    cond = CFGConditioning(mode, n_tokens=4, dim=8)
    a, b = cond(torch.tensor([[6.5, 2.0], [1.0, 1.0]]))
    assert (None if a is None else tuple(a.shape)) == tokens
    assert (None if b is None else tuple(b.shape)) == tcond
    assert cond.uses_layers == (mode in ("tokens", "layer"))
    n_params = sum(p.numel() for p in cond.parameters())
    assert (n_params > 0) == (mode in ("tokens", "layer"))


def test_unknown_mode():
    with pytest.raises(FadaError, match="cfg.mode"):
        CFGConditioning("ω")
