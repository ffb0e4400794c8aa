"""ReferenceNet / DenoisingNet: SD1.5 exactness, bank semantics, temporal and CFG layers, checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch

from fada.models.attention import Bank
from fada.models.cfg_tokens import TIME_COND_DIM, cfg_scale_embedding
from fada.models.denoising_net import DenoisingNet, TemporalAttention
from fada.models.loading import load_sd_unet
from fada.models.reference_net import ReferenceNet

# Equal up to float32 accumulation order: conv and matmul kernels sum in different orders on different CPUs (an
# AVX-512 machine gave 1.8187e-01 where this one gives 1.8188e-01), so exact-to-1e-6 comparisons are not portable.
FP32_RTOL, FP32_ATOL = 1e-5, 1e-5

C, HW, F, M, D = 12, 16, 4, 2, 32


def tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=HW, in_channels=C, out_channels=C,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=2, cross_attention_dim=D,
        norm_num_groups=8,
    )


def randomize_(module, std=0.2):
    """Make zero-initialised layers non-trivial."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * std)
    return module


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny SD1.5-layout folder (``unet/config.json`` + safetensors) and the plain UNet saved in it."""
    torch.manual_seed(1)
    unet = tiny_unet().eval()
    root = tmp_path_factory.mktemp("sd15")
    unet.save_pretrained(root / "unet", safe_serialization=True)
    return root, unet


@pytest.fixture(scope="module")
def nets(sd_folder):
    root, plain = sd_folder
    ref = ReferenceNet(load_sd_unet(root)).eval()
    den = DenoisingNet(load_sd_unet(root), temporal_heads=4, max_frames=8).eval()
    return plain, ref, den


def _inputs(b=2, n_tok=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, C, F, HW, HW, generator=g)
    t = torch.tensor([7.0, 640.0, 333.0][:b])
    audio = torch.randn(b, F, n_tok, D, generator=g)
    ref = torch.randn(b, C, HW, HW, generator=g)
    motion = torch.randn(b, M, C, HW, HW, generator=g)
    return z, t, audio, ref, motion


def _plain_frames(plain, z, t, audio):
    """Plain UNet run frame by frame: (B, C, F, h, w)."""
    outs = []
    for b in range(z.shape[0]):
        x = z[b].permute(1, 0, 2, 3)
        outs.append(plain(x, t[b].expand(F), encoder_hidden_states=audio[b]).sample.permute(1, 0, 2, 3))
    return torch.stack(outs)


@torch.no_grad()
def test_denoising_net_equals_sd_unet_at_init(nets):
    plain, ref, den = nets
    z, t, audio, r, m = _inputs()
    expect = _plain_frames(plain, z, t, audio)
    out = den(z, t, audio)
    assert out.shape == z.shape
    assert torch.allclose(out, expect, atol=FP32_ATOL, rtol=FP32_RTOL)
    bank = ref(r, m)  # with a bank that no sample keeps, still plain SD
    out2 = den(z, t, audio, bank=bank, keep_ref=torch.tensor([False, False]))
    assert torch.allclose(out2, expect, atol=FP32_ATOL, rtol=FP32_RTOL)


@torch.no_grad()
def test_reference_net_equals_sd_unet(nets):
    plain, ref, _ = nets
    _, _, _, r, m = _inputs()
    bank, sample = ref(r, m, return_sample=True)
    x = torch.cat([r[:, None], m], 1).reshape(-1, C, HW, HW)
    expect = plain(x, torch.zeros(x.shape[0]), encoder_hidden_states=torch.zeros(x.shape[0], 5, D)).sample
    assert torch.allclose(sample, expect, atol=FP32_ATOL, rtol=FP32_RTOL)
    assert bank.batch_size == 2 and bank.views == 1 + M
    assert sorted(bank.tokens) == sorted(ref.bank_layers())
    first = bank.tokens[ref.bank_layers()[0]]
    assert first.shape == (2, (1 + M) * HW * HW, 32)


def test_bank_keys_match_reader_layers(nets):
    _, ref, den = nets
    readers = [m.processor.name for m in den.unet.modules()
               if type(getattr(m, "processor", None)).__name__ == "BankReadProcessor"]
    assert readers == ref.bank_layers()


@torch.no_grad()
def test_bank_reference_changes_output_and_keep_ref_false_is_no_bank(nets):
    _, ref, den = nets
    z, t, audio, r, m = _inputs()
    no_bank = den(z, t, audio)
    with_bank = den(z, t, audio, bank=ref(r, m))
    other = den(z, t, audio, bank=ref(torch.randn_like(r), m))
    assert (with_bank - no_bank).abs().max() > 1e-3
    assert (with_bank - other).abs().max() > 1e-3
    mixed = den(z, t, audio, bank=ref(r, m), keep_ref=torch.tensor([True, False]))
    assert torch.allclose(mixed[0], with_bank[0], atol=1e-6)
    assert torch.allclose(mixed[1], no_bank[1], atol=1e-6)
    # motion frames are part of the bank too
    other_motion = den(z, t, audio, bank=ref(r, torch.randn_like(m)))
    assert (with_bank - other_motion).abs().max() > 1e-4


@torch.no_grad()
def test_three_branch_batch_equals_separate_calls(nets):
    _, ref, den = nets
    z, t, audio, r, m = _inputs()
    bank = ref(r, m)
    zeros = torch.zeros_like(audio)
    ka = torch.tensor([True, True, False, False, False, False])
    kr = torch.tensor([True, True, True, True, False, False])
    tok = torch.where(ka[:, None, None, None], torch.cat([audio] * 3), 0.0)
    batched = den(torch.cat([z] * 3), torch.cat([t] * 3), tok, bank=bank.repeat(3), keep_ref=kr)
    sep = [den(z, t, audio, bank=bank), den(z, t, zeros, bank=bank), den(z, t, zeros)]
    assert torch.allclose(batched, torch.cat(sep), atol=1e-5)


def test_temporal_layer_identity_at_init_and_mixes_frames():
    layer = TemporalAttention(32, heads=4, max_frames=8)
    h = torch.randn(2 * F, 32, 4, 4)
    assert torch.equal(layer(h, F), h)
    randomize_(layer)
    h = h.clone().requires_grad_(True)
    out = layer(h, F)
    out.reshape(2, F, 32, 4, 4)[0, 0, :, 0, 0].sum().backward()  # frame 0, position (0, 0)
    g = h.grad.reshape(2, F, 32, 4, 4)
    assert g[0, 3].abs().sum() > 0  # frame 0's output depends on frame 3's input
    assert g[1].abs().sum() == 0  # but not on another clip
    # and only through the same spatial position
    assert g[0, 3, :, 1:, :].abs().sum() == 0 and g[0, 3, :, 0, 1:].abs().sum() == 0
    with pytest.raises(Exception, match="max_frames"):
        layer(torch.randn(9, 32, 2, 2), 9)


@torch.no_grad()
def test_temporal_layers_in_net_connect_frames(sd_folder):
    root, _ = sd_folder
    den = DenoisingNet(load_sd_unet(root), temporal_heads=4, max_frames=8).eval()
    for n, p in den.named_parameters():
        if ".temporal.to_out" in n:
            p.normal_(0, 0.2)
    z, t, audio, _, _ = _inputs(b=1)
    out = den(z, t, audio)
    z2 = z.clone()
    z2[:, :, 3] += 1.0
    out2 = den(z2, t, audio)
    assert (out2[:, :, 0] - out[:, :, 0]).abs().max() > 1e-4


@torch.no_grad()
def test_cfg_layers_and_time_embed_do_not_disturb_sd_at_init(sd_folder):
    root, plain = sd_folder
    z, t, audio, _, _ = _inputs()
    expect = _plain_frames(plain, z, t, audio)
    den = DenoisingNet(load_sd_unet(root), 4, 8, cfg_dim=D).eval()
    tokens = torch.randn(2, 3, D)
    assert torch.allclose(den(z, t, audio, cfg_tokens=tokens), expect, atol=FP32_ATOL, rtol=FP32_RTOL)
    den_t = DenoisingNet(load_sd_unet(root), 4, 8, time_cond_dim=TIME_COND_DIM).eval()
    tc = cfg_scale_embedding(torch.tensor([[6.5, 2.0], [3.0, 1.0]]), TIME_COND_DIM)
    assert torch.allclose(den_t(z, t, audio, timestep_cond=tc), expect, atol=FP32_ATOL, rtol=FP32_RTOL)
    # once trained (non-zero), the CFG tokens do reach the output
    for n, p in den.named_parameters():
        if ".cfg.to_out" in n:
            p.normal_(0, 0.2)
    a = den(z, t, audio, cfg_tokens=tokens)
    b = den(z, t, audio, cfg_tokens=torch.randn(2, 3, D))
    assert (a - b).abs().max() > 1e-4
    den_t.unet.time_embedding.cond_proj.weight.normal_(0, 0.2)
    tc2 = cfg_scale_embedding(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), TIME_COND_DIM)
    assert (den_t(z, t, audio, timestep_cond=tc) - den_t(z, t, audio, timestep_cond=tc2)).abs().max() > 1e-4


def test_reference_unused_parameters_are_exactly_those_without_grad(nets):
    _, ref, _ = nets
    ref = copy.deepcopy(ref)
    names = set(ref.unused_parameter_names())
    assert "unet.conv_out.weight" in names
    _, _, _, r, m = _inputs()
    bank = ref(r, m)
    sum(v.square().mean() for v in bank.tokens.values()).backward()
    no_grad = {n for n, p in ref.named_parameters() if p.grad is None}
    assert no_grad == names


def test_gradient_checkpointing_backward_matches(sd_folder):
    root, _ = sd_folder
    torch.manual_seed(3)
    ref = ReferenceNet(load_sd_unet(root))
    den = randomize_(DenoisingNet(load_sd_unet(root), 4, 8, cfg_dim=D), std=0.05)
    z, t, audio, r, m = _inputs()
    tokens = torch.randn(2, 3, D)

    def loss_and_grads():
        for p in list(ref.parameters()) + list(den.parameters()):
            p.grad = None
        bank = ref(r, m)
        out = den(z, t, audio, bank=bank, keep_ref=torch.tensor([True, False]), cfg_tokens=tokens)
        # a second forward before the backward (as mixed supervision does) must not confuse recomputation
        out2 = den(z * 0.5, t, audio, bank=None, cfg_tokens=tokens * 2)
        (out.square().mean() + out2.square().mean()).backward()
        return {n: p.grad.clone() for n, p in den.named_parameters() if p.grad is not None}

    g0 = loss_and_grads()
    ref.unet.enable_gradient_checkpointing()
    den.unet.enable_gradient_checkpointing()
    assert any(getattr(m, "gradient_checkpointing", False) for m in den.modules()
               if type(m).__name__ == "SpatialTemporalBlock")
    g1 = loss_and_grads()
    assert g0.keys() == g1.keys() and len(g0) > 0
    for k in g0:
        assert torch.allclose(g0[k], g1[k], atol=1e-5, rtol=1e-4), k


def test_bank_repeat_tiles_in_cat_order():
    bank = Bank({"a": torch.arange(2.0)[:, None, None]}, 2, 1)
    assert bank.repeat(3).tokens["a"].flatten().tolist() == [0, 1, 0, 1, 0, 1]
    assert bank.repeat(3).batch_size == 6
