"""The CUDA paths: xformers attention and fp16 / bf16 forwards against float32 references.

These run only where a CUDA GPU is present (xformers too, for the xformers ones); on the CPU-only CI they are
skipped. ``python -m pytest tests/models/test_cuda.py`` on a GPU machine runs them.
"""

from __future__ import annotations

import pytest
import torch

from fada.models.attention import attention, naive_attention, xformers_available

from .test_avatar import B, _inputs, teacher  # noqa: F401  (teacher is a fixture)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_xformers = pytest.mark.skipif(not xformers_available(), reason="needs a CUDA GPU and an xformers build that runs on it")

# half-precision tolerances: outputs are O(1); fp16 keeps 11 significant bits, bf16 8
TOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2}
# a whole net's output relative to its largest value (errors compound over the layers)
FORWARD_TOL = {torch.float16: 0.02, torch.bfloat16: 0.1}


def _qkv(dtype, b=2, h=8, lq=77, lk=93, d=40):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, h, n, d, generator=g).cuda().to(dtype) for n in (lq, lk, lk)]


@needs_xformers
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_xformers_matches_naive(dtype, mask_kind):
    q, k, v = _qkv(dtype)
    g = torch.Generator().manual_seed(1)
    mask = None
    if mask_kind == "bool":  # (B, 1, 1, Lk): the key-padding shape; lk = 93 is not 8-aligned on purpose
        mask = (torch.rand(2, 1, 1, 93, generator=g) > 0.3).cuda()
        mask[..., 0] = True
    elif mask_kind == "float":
        mask = torch.randn(2, 1, 77, 93, generator=g).cuda().to(dtype)
    out = attention(q, k, v, mask, backend="xformers")
    ref = naive_attention(q.float(), k.float(), v.float(), None if mask is None else
                          (mask if mask.dtype == torch.bool else mask.float()))
    assert out.dtype == dtype and out.shape == ref.shape
    assert (out.float() - ref).abs().max() < TOL[dtype]
    assert (attention(q, k, v, mask, backend="sdpa").float() - ref).abs().max() < TOL[dtype]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["sdpa", "xformers"])
def test_half_precision_three_branch_forward_matches_fp32(teacher, dtype, backend):  # noqa: F811
    """The multi-CFG batch (with and without the bank) on the GPU in half precision, against CPU float32."""
    if backend == "xformers" and not xformers_available():
        pytest.skip("needs xformers")
    import copy

    x = _inputs()
    on, off = torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool)
    keep_a, keep_r = torch.cat([on, off, off]), torch.cat([on, on, off])
    z3, t3 = torch.cat([x["z"]] * 3), torch.cat([x["t"]] * 3)
    with torch.no_grad():
        ref = teacher.model_fn(teacher.encode_bank(x["ref"], x["motion"]), x["audio"])(z3, t3, keep_a, keep_r)
        net = copy.deepcopy(teacher).to("cuda", dtype)
        net.set_attention_backend(backend)
        c = {k: v.cuda().to(dtype) for k, v in x.items() if k != "t"}
        fn = net.model_fn(net.encode_bank(c["ref"], c["motion"]), c["audio"])
        out = fn(z3.cuda().to(dtype), t3.cuda(), keep_a.cuda(), keep_r.cuda()).float().cpu()
    assert torch.isfinite(out).all()
    err = (out - ref).abs().max() / ref.abs().max()
    assert err < FORWARD_TOL[dtype], f"{dtype} {backend}: relative error {err:.4f}"
    # the branches still differ as in float32 (the bank and the audio are read)
    n = B
    assert (out[:n] - out[n:2 * n]).abs().max() > 0.1 * (ref[:n] - ref[n:2 * n]).abs().max()


@needs_cuda
def test_bf16_autocast_training_step_has_finite_gradients(teacher):  # noqa: F811
    import copy

    net = copy.deepcopy(teacher).cuda().train()
    x = {k: v.cuda() for k, v in _inputs().items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eps = net(x["z"], x["t"], x["audio"], net.encode_bank(x["ref"], x["motion"]))
        loss = eps.float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.reference_net.parameters())
