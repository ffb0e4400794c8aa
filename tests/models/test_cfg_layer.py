"""The folded CFG layer equals the layer computed as written (project, attend, project), values and gradients."""

import pytest
import torch

from fada.models.cfg_layer import CFGCrossAttention


def _layer(normalize: bool, dtype=torch.float32, channels=16, heads=4, cfg_dim=12):
    torch.manual_seed(0)
    layer = CFGCrossAttention(channels, heads, cfg_dim, normalize=normalize).to(dtype)
    for p in layer.parameters():  # non-zero output projection and a non-trivial LayerNorm affine
        torch.nn.init.normal_(p, std=0.5)
    return layer


@pytest.mark.parametrize("normalize", [False, True])
def test_folded_equals_textbook_float64(normalize):
    layer = _layer(normalize, torch.float64)
    h = torch.randn(2 * 3, 16, 5, 4, dtype=torch.float64)
    tokens = torch.randn(2, 4, 12, dtype=torch.float64)
    out = layer(h, tokens, frames=3)
    ref = layer.reference_forward(h, tokens, frames=3)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert (out - h).abs().mean() > 0.1  # the layer does something (its output projection is not zero here)


def test_folded_equals_textbook_float32_and_gradients():
    layer = _layer(False)
    h = torch.randn(4, 16, 6, 6, requires_grad=True)
    tokens = torch.randn(2, 4, 12, requires_grad=True)
    grads = []
    for fn in (layer.forward, layer.reference_forward):
        layer.zero_grad()
        h.grad = tokens.grad = None
        out = fn(h, tokens, 2)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([out.detach(), h.grad.clone(), tokens.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*grads):  # float32 rounding of two orders of summation: relative to each tensor's scale
        assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-7


def test_frames_must_match_batch():
    layer = _layer(False)
    with pytest.raises(ValueError, match="token sets"):
        layer(torch.randn(5, 16, 2, 2), torch.randn(2, 4, 12), frames=3)


def test_fewer_operations_than_textbook():
    """Per spatial token the folded layer does 2·C·(H·n) multiply-adds where to_q and to_out do 2·C²: at SD1.5's
    widest level (C 1280, 8 heads, 4 tokens) that is 40× fewer, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    layer = CFGCrossAttention(1280, 8, 768)
    h, tokens = torch.randn(4, 1280, 8, 8), torch.randn(1, 4, 768)
    counts = []
    for fn in (layer.forward, layer.reference_forward):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            fn(h, tokens, 4)
        counts.append(fc.get_total_flops())
    assert counts[0] * 5 < counts[1], counts
