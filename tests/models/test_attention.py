"""Attention backend selection and agreement; the bank processor's batch partition equals masked attention."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fada.errors import FadaError
from fada.models.attention import (AttnContext, Bank, BankReadProcessor, attention, make_read_context,
                                   naive_attention, resolve_backend)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


def _qkv(b=2, h=3, lq=5, lk=7, d=8):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, h, lq, d, generator=g), torch.randn(b, h, lk, d, generator=g),
            torch.randn(b, h, lk, d, generator=g))


def test_sdpa_matches_naive_without_mask():
    q, k, v = _qkv()
    out = attention(q, k, v, backend="sdpa")
    assert out.shape == (2, 3, 5, 8)
    assert torch.allclose(out, naive_attention(q, k, v), atol=1e-5)
    assert torch.allclose(attention(q, k, v, backend="naive"), naive_attention(q, k, v))


@pytest.mark.parametrize("shape", [(2, 1, 1, 7), (2, 3, 5, 7), (1, 1, 5, 7)])
def test_sdpa_matches_naive_with_bool_mask(shape):
    q, k, v = _qkv()
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(shape, generator=g) > 0.4
    mask[..., 0] = True  # no fully-masked rows
    out = attention(q, k, v, mask, backend="sdpa")
    ref = naive_attention(q, k, v, mask)
    assert torch.allclose(out, ref, atol=1e-5)
    # a key masked for every query really is ignored: changing its value changes nothing
    mask[..., -1] = False
    out = attention(q, k, v, mask, backend="sdpa")
    v2 = v.clone()
    v2[..., -1, :] += 100.0
    assert torch.allclose(attention(q, k, v2, mask, backend="sdpa"), out, atol=1e-4)


def test_sdpa_matches_naive_with_float_mask():
    q, k, v = _qkv()
    bias = torch.randn(2, 1, 5, 7)
    assert torch.allclose(attention(q, k, v, bias, backend="sdpa"), naive_attention(q, k, v, bias), atol=1e-5)


@no_cuda
def test_auto_resolves_to_sdpa_and_xformers_raises_on_cpu():
    assert resolve_backend("auto") == "sdpa"
    assert resolve_backend("sdpa") == "sdpa"
    with pytest.raises(FadaError, match="xformers"):
        resolve_backend("xformers")
    with pytest.raises(FadaError, match="unknown backend"):
        resolve_backend("flash")
    # CPU tensors handed to the xformers backend fall back to sdpa rather than importing xformers
    q, k, v = _qkv()
    assert torch.allclose(attention(q, k, v, backend="xformers"), attention(q, k, v, backend="sdpa"))


@pytest.fixture
def fake_cuda_with_xformers(monkeypatch):
    """CUDA reported present and an xformers package found, the probe's verdict set by the test."""
    import importlib.util

    import fada.models.attention as att

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "xformers" else real_find_spec(name, *a))
    verdict = {"reason": None}
    monkeypatch.setattr(att, "_probe_xformers", lambda: verdict["reason"])
    for f in (att.xformers_unusable_reason, att._warn_once):
        f.cache_clear()
    yield verdict
    for f in (att.xformers_unusable_reason, att._warn_once):
        f.cache_clear()


def test_auto_falls_back_to_sdpa_when_installed_xformers_cannot_run(fake_cuda_with_xformers):
    """An xformers wheel built for another torch imports but cannot run: 'auto' must not pick it."""
    import fada.models.attention as att

    fake_cuda_with_xformers["reason"] = "xformers cannot run on this torch build (No operator found)"
    with pytest.warns(RuntimeWarning, match="uses PyTorch SDPA: xformers cannot run"):
        assert resolve_backend("auto") == "sdpa"
    assert not att.xformers_available()
    with pytest.raises(FadaError, match="'xformers': xformers cannot run.*use 'sdpa'"):
        resolve_backend("xformers")


def test_auto_picks_xformers_when_its_probe_runs(fake_cuda_with_xformers):
    import fada.models.attention as att

    assert resolve_backend("auto") == "xformers" and resolve_backend("xformers") == "xformers"
    assert att.xformers_available()


def test_xformers_never_imported_at_import_time():
    code = ("import sys, fada.models.attention, fada.models.denoising_net, fada.models.avatar; "
            "assert 'xformers' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def _attn_module(c=16, heads=2):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    return Attention(query_dim=c, heads=heads, dim_head=c // heads)


def test_bank_read_partition_equals_masked_attention():
    attn = _attn_module()
    name = "blk.attn1"
    attn.set_processor(BankReadProcessor(name, "sdpa"))
    b, f, length, s, c = 3, 2, 6, 4, 16
    x = torch.randn(b * f, length, c)
    tokens = torch.randn(b, s, c)
    bank = Bank({name: tokens}, b, 1)
    keep = torch.tensor([True, False, True])
    ctx = make_read_context(bank, keep, b, f, x.device)
    out = attn(x, fada_ctx=ctx)

    # reference: one batched attention over [own, bank] with an additive -inf mask on the bank part
    q = attn.to_q(x).view(b * f, length, 2, 8).transpose(1, 2)
    kv_in = torch.cat([x, tokens.repeat_interleave(f, 0)], 1)
    k = attn.to_k(kv_in).view(b * f, length + s, 2, 8).transpose(1, 2)
    v = attn.to_v(kv_in).view(b * f, length + s, 2, 8).transpose(1, 2)
    mask = torch.ones(b * f, 1, 1, length + s, dtype=torch.bool)
    mask[~keep.repeat_interleave(f), ..., length:] = False
    ref = naive_attention(q, k, v, mask).transpose(1, 2).reshape(b * f, length, c)
    ref = attn.to_out[0](ref)
    assert torch.allclose(out, ref, atol=1e-5)

    # no context / no bank: plain self-attention, like diffusers' own processor
    from diffusers.models.attention_processor import AttnProcessor2_0

    plain = attn(x)
    attn.set_processor(AttnProcessor2_0())
    assert torch.equal(plain, attn(x))


def test_read_context_partitions():
    bank = Bank({}, 2, 1)
    ctx = make_read_context(bank, torch.tensor([False, True]), 2, 3, "cpu")
    assert ctx.keep_idx.tolist() == [3, 4, 5] and ctx.drop_idx.tolist() == [0, 1, 2]
    assert ctx.keep_bank_idx.tolist() == [1, 1, 1]
    assert make_read_context(bank, torch.tensor([False, False]), 2, 3, "cpu").bank is None
    all_keep = make_read_context(bank, None, 2, 3, "cpu")
    assert all_keep.drop_idx is None and all_keep.keep_idx.tolist() == list(range(6))
    assert make_read_context(None, None, 2, 3, "cpu").bank is None
    with pytest.raises(ValueError, match="bank holds 2"):
        make_read_context(bank, None, 3, 1, "cpu")
    assert isinstance(AttnContext(), AttnContext)


def test_grid_positions_code_rows_and_columns():
    """Independent computation of the 2-D sine-cosine code for an 8x4 grid (token index y·w + x)."""
    import math

    from fada.models.attention import grid_positions

    dim, h, w = 16, 8, 4
    got = grid_positions(h * w // 4, (h, w), dim, "cpu", torch.float32)  # one level down: a 4x2 token grid
    assert got.shape == (8, dim)
    q = dim // 4
    for y in range(4):
        for x in range(2):
            want = []
            for c in (y, x):
                ang = [c / 100.0 ** (k / q) for k in range(q)]
                want += [math.sin(a) for a in ang] + [math.cos(a) for a in ang]
            torch.testing.assert_close(got[y * 2 + x], torch.tensor(want), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="latent grid"):
        grid_positions(7, (h, w), dim, "cpu", torch.float32)


def test_bank_positions_change_only_the_bank_attention_and_survive_save_load(tmp_path):
    from fada.config import load_recipe
    from fada.models.avatar import AvatarNet, build_avatar_net
    from tests.fixtures import TINY_TEST_MODEL

    from .test_nets import randomize_

    torch.manual_seed(0)
    m = load_recipe("tiny-teacher", TINY_TEST_MODEL + ["model.unet.bank_positions=true"]).model
    net = randomize_(build_avatar_net(m), std=0.05).eval()
    assert net.denoising_net.bank_positions
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, net.latent_channels, m.num_frames, 16, 16, generator=g)
    ref = torch.randn(1, net.latent_channels, 16, 16, generator=g)
    feats = torch.randn(1, m.num_frames, *net.audio_feature_shape, generator=g)
    t = torch.tensor([300.0])
    with torch.no_grad():
        bank = net.encode_bank(ref)
        with_pos = net(z, t, feats, bank)
        no_ref = net(z, t, feats, bank, keep_ref=torch.tensor([False]))
        net.denoising_net.bank_positions = False
        without = net(z, t, feats, bank)
        without_no_ref = net(z, t, feats, bank, keep_ref=torch.tensor([False]))
        net.denoising_net.bank_positions = True
    assert (with_pos - without).abs().max() > 1e-4  # the code reaches the output through the bank attention
    torch.testing.assert_close(no_ref, without_no_ref)  # without the bank: plain self-attention, no code
    net.save_pretrained(tmp_path / "n")
    again = AvatarNet.from_pretrained(tmp_path / "n").eval()
    assert again.denoising_net.bank_positions
    with torch.no_grad():
        torch.testing.assert_close(again(z, t, feats, again.encode_bank(ref)), with_pos)
    student = AvatarNet.from_teacher(again, "tokens")
    assert student.denoising_net.bank_positions
