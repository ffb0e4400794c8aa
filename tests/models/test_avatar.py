"""AvatarNet: shapes for teacher and students, model_fn contract, teacher->student, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fada.config.model import AudioConfig, CFGConfig, ModelConfig, UNetConfig, VAEConfig
from fada.errors import FadaError, MissingFileError
from fada.models.attention import Bank
from fada.models.avatar import AvatarNet, build_avatar_net

from .test_nets import randomize_

B, F, M, HW, C, WIN, MELS = 2, 4, 2, 16, 12, 2, 8
FEAT = (2 * WIN + 1, 1, MELS)


def tiny_cfg(mode="none", pretrained=None) -> ModelConfig:
    return ModelConfig(
        resolution=32, num_frames=F, motion_frames=M, attention_backend="sdpa",
        vae=VAEConfig(kind="pixel", factor=2),
        unet=UNetConfig(pretrained=pretrained, block_out_channels=[32, 64],
                        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1,
                        attention_head_dim=2, cross_attention_dim=32, norm_num_groups=8, temporal_heads=4,
                        max_frames=8),
        audio=AudioConfig(kind="mel", n_mels=MELS, window=WIN, n_tokens=4, hidden_dim=32),
        cfg=CFGConfig(mode=mode, n_tokens=2),
    )


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return randomize_(build_avatar_net(tiny_cfg()), std=0.02).eval()


def _inputs(b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(z=torch.randn(b, C, F, HW, HW, generator=g), t=torch.tensor([10.0, 700.0, 400.0][:b]),
                audio=torch.randn(b, F, *FEAT, generator=g), ref=torch.randn(b, C, HW, HW, generator=g),
                motion=torch.randn(b, M, C, HW, HW, generator=g))


def test_cached_reference_bank_equals_full_encode(teacher):
    """The pipeline encodes the reference once per video: ref bank + per-clip motion views = one joint encode."""
    x = _inputs()
    with torch.no_grad():
        full = teacher.encode_bank(x["ref"], x["motion"])
        ref_bank = teacher.encode_bank(x["ref"])
        cached = teacher.encode_bank(x["ref"], x["motion"], ref_bank)
        assert cached.views == full.views == 1 + M and cached.batch_size == B
        for k, v in full.tokens.items():
            torch.testing.assert_close(cached.tokens[k], v, atol=1e-5, rtol=1e-5)
        # the first clip's motion frames are the reference itself: its bank is the reference's, repeated
        first = teacher.encode_bank(x["ref"], x["ref"][:, None].expand(B, M, *x["ref"].shape[1:]).contiguous())
        tiled = Bank.concat_views([ref_bank] * (1 + M))
        for k, v in first.tokens.items():
            torch.testing.assert_close(tiled.tokens[k], v, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="join_views"):
        ref_bank.join_views(3)


def test_shapes_teacher(teacher):
    x = _inputs()
    assert teacher.latent_channels == C and teacher.audio_feature_shape == FEAT and not teacher.student
    with torch.no_grad():
        bank = teacher.encode_bank(x["ref"], x["motion"])
        assert isinstance(bank, Bank) and bank.batch_size == B and bank.views == 1 + M
        assert teacher.audio_tokens(x["audio"]).shape == (B, F, 4, 32)
        eps = teacher(x["z"], x["t"], x["audio"], bank, torch.tensor([True, False]), torch.tensor([True, True]))
        assert eps.shape == (B, C, F, HW, HW)
        # first clip: no motion frames
        bank0 = teacher.encode_bank(x["ref"], None)
        assert bank0.views == 1
        assert teacher(x["z"], x["t"], x["audio"], bank0).shape == eps.shape
    with pytest.raises(ValueError, match="audio_features"):
        teacher(x["z"], x["t"], x["audio"][:, :2], bank)


def test_teacher_rejects_cfg_mode():
    with pytest.raises(FadaError, match="cfg.mode"):
        build_avatar_net(tiny_cfg("tokens"), student=False)


@pytest.mark.parametrize("mode", ["tokens", "layer", "time_embed", "none"])
def test_student_from_teacher_equals_teacher_at_init(teacher, mode):
    student = AvatarNet.from_teacher(teacher, mode).eval()
    assert student.student and student.cfg_mode == mode
    x = _inputs()
    scales = torch.tensor([[6.5, 2.0], [3.0, 1.5]])
    with torch.no_grad():
        bank = teacher.encode_bank(x["ref"], x["motion"])
        want = teacher(x["z"], x["t"], x["audio"], bank)
        got = student(x["z"], x["t"], x["audio"], student.encode_bank(x["ref"], x["motion"]),
                      cfg_scales=scales if mode != "none" else None)
    assert got.shape == (B, C, F, HW, HW)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)  # float32 accumulation order varies by CPU
    if mode != "none":
        with pytest.raises(ValueError, match="cfg_scales"):
            student(x["z"], x["t"], x["audio"], bank)


def test_build_student_directly_and_count_parameters():
    counts = {}
    for mode in ["none", "tokens", "layer", "time_embed"]:
        net = build_avatar_net(tiny_cfg(mode), student=True)
        counts[mode] = {p: sum(q.numel() for q in getattr(net, p).parameters())
                        for p in ("reference_net", "denoising_net", "audio_proj", "cfg")}
    assert counts["none"]["cfg"] == 0 and counts["tokens"]["cfg"] == 3 * 2 * 32
    assert counts["tokens"]["denoising_net"] == counts["layer"]["denoising_net"] > counts["none"]["denoising_net"]
    assert counts["time_embed"]["denoising_net"] == counts["none"]["denoising_net"] + 256 * 32


def test_model_fn_three_branch_batch(teacher):
    x = _inputs()
    with torch.no_grad():
        bank = teacher.encode_bank(x["ref"], x["motion"])
        fn = teacher.model_fn(bank, x["audio"])
        on, off = torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool)
        z3 = torch.cat([x["z"]] * 3)
        eps = fn(z3, torch.cat([x["t"]] * 3), torch.cat([on, off, off]), torch.cat([on, on, off]))
        a = teacher(x["z"], x["t"], x["audio"], bank)
        r = teacher(x["z"], x["t"], x["audio"], bank, keep_audio=off)
        b = teacher(x["z"], x["t"], x["audio"], None, keep_audio=off)
        assert torch.allclose(eps, torch.cat([a, r, b]), atol=1e-5)
        assert (a - r).abs().max() > 1e-4 and (r - b).abs().max() > 1e-4
        # scalar t and default masks, and the cached second call
        assert torch.allclose(fn(x["z"], torch.tensor(10.0), None, None),
                              teacher(x["z"], torch.tensor([10.0, 10.0]), x["audio"], bank), atol=1e-6)
        assert torch.allclose(fn(z3, torch.cat([x["t"]] * 3), torch.cat([on, off, off]),
                                 torch.cat([on, on, off])), eps)


@pytest.mark.parametrize("branches", [(True, True, False), (False, True), (True,)])
def test_model_fn_with_a_planned_read_split_calls_no_nonzero(teacher, branches, monkeypatch):
    """Given each branch's keep_ref (a plan's branches), the bank-reading rows are decided once on the host: the
    forwards call no torch.nonzero (a GPU sync, a data-dependent shape) and give the same ε bit for bit."""
    from fada.diffusion import Guidance, guided

    x = _inputs()
    scales = {3: (6.5, 2.5), 2: (3.0, 3.0), 1: (1.0, 1.0)}[len(branches)]
    assert tuple(kr for _, kr in Guidance(*scales).branches) == branches
    calls = []
    real = torch.nonzero
    with torch.no_grad():
        bank = teacher.encode_bank(x["ref"], x["motion"])
        want = guided(teacher.model_fn(bank, x["audio"]), Guidance(*scales))(x["z"], x["t"])
        fn = guided(teacher.model_fn(bank, x["audio"], branch_keep_ref=branches), Guidance(*scales))
        fn(x["z"], x["t"])  # the first call decides the split
        monkeypatch.setattr(torch, "nonzero", lambda *a, **k: calls.append(1) or real(*a, **k))
        got = fn(x["z"], x["t"])
    assert not calls
    assert torch.equal(got, want)


def test_keep_audio_false_is_zero_tokens(teacher):
    x = _inputs()
    tok = teacher.audio_tokens(x["audio"], torch.tensor([False, True]))
    assert torch.equal(tok[0], torch.zeros_like(tok[0])) and tok[1].abs().sum() > 0


def _outputs(net, x, scales=None):
    with torch.no_grad():
        bank = net.encode_bank(x["ref"], x["motion"])
        return net(x["z"], x["t"], x["audio"], bank, torch.tensor([True, False]), None, scales)


def test_save_load_round_trip_teacher_and_fast_student(teacher, tmp_path):
    x = _inputs()
    teacher.save_pretrained(tmp_path / "teacher")
    loaded = AvatarNet.from_pretrained(tmp_path / "teacher", attention_backend="sdpa")
    assert not loaded.student and torch.equal(_outputs(loaded, x), _outputs(teacher, x))

    student = randomize_(AvatarNet.from_teacher(teacher, "tokens"), std=0.02).eval()
    scales = torch.tensor([[6.5, 2.0], [4.0, 2.0]])
    student.save_pretrained(tmp_path / "fast")
    top = json.loads((tmp_path / "fast" / "avatar_config.json").read_text())
    assert top["student"] and top["cfg_mode"] == "tokens"
    s2 = AvatarNet.from_pretrained(tmp_path / "fast")
    assert torch.equal(_outputs(s2, x, scales), _outputs(student, x, scales))
    assert torch.equal(s2.cfg.tokens.gamma_a, student.cfg.tokens.gamma_a)
    # no pickle anywhere
    assert not list((tmp_path / "fast").rglob("*.bin")) and not list((tmp_path / "fast").rglob("*.pt"))
    # fp16 export loads (as fp16 or cast back)
    student.save_pretrained(tmp_path / "fast16", dtype=torch.float16)
    s16 = AvatarNet.from_pretrained(tmp_path / "fast16")
    assert torch.allclose(_outputs(s16, x, scales), _outputs(student, x, scales), atol=5e-2)


def test_load_errors_name_the_file(teacher, tmp_path):
    d = tmp_path / "m"
    teacher.save_pretrained(d)
    w = d / "denoising_net" / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[:1000])
    with pytest.raises(FadaError, match=r"denoising_net/model\.safetensors") as e:
        AvatarNet.from_pretrained(d)
    assert "\n" not in str(e.value)
    w.write_bytes(good)
    a = d / "audio_proj" / "model.safetensors"
    state = load_file(str(a))
    key = sorted(state)[0]
    state[key] = torch.zeros(*[s + 1 for s in state[key].shape])
    save_file(state, str(a))
    with pytest.raises(FadaError, match=r"audio_proj/model\.safetensors: .* has shape"):
        AvatarNet.from_pretrained(d)
    (d / "cfg" / "config.json").unlink()
    with pytest.raises(MissingFileError, match=r"cfg/config\.json"):
        AvatarNet.from_pretrained(d)
    (d / "avatar_config.json").write_text("[]")
    with pytest.raises(FadaError, match=r"avatar_config\.json"):
        AvatarNet.from_pretrained(d)
    with pytest.raises(MissingFileError):
        AvatarNet.from_pretrained(tmp_path / "absent")


def test_build_from_local_sd_folder(tmp_path):
    from .test_nets import tiny_unet

    plain = tiny_unet().eval()
    plain.save_pretrained(tmp_path / "sd" / "unet", safe_serialization=True)
    net = build_avatar_net(tiny_cfg(pretrained=str(tmp_path / "sd")))
    want = dict(plain.named_parameters())["down_blocks.0.attentions.0.proj_in.weight"]
    assert torch.equal(dict(net.reference_net.unet.named_parameters())["down_blocks.0.attentions.0.proj_in.weight"],
                       want)
    got = dict(net.denoising_net.unet.named_parameters())["down_blocks.0.attentions.0.spatial.proj_in.weight"]
    assert torch.equal(got, want)
    with pytest.raises(MissingFileError, match=r"unet/config\.json"):
        build_avatar_net(tiny_cfg(pretrained=str(tmp_path)))


def test_gradient_checkpointing_training_step(teacher):
    import copy

    net = copy.deepcopy(teacher).train()
    net.enable_gradient_checkpointing()
    x = _inputs()
    bank = net.encode_bank(x["ref"], x["motion"])
    eps = net(x["z"], x["t"], x["audio"], bank, torch.tensor([True, False]), torch.tensor([True, False]))
    loss = (eps - torch.randn_like(eps)).square().mean()
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None][:5]
    frozen = {"reference_net." + n for n in net.frozen_reference_parameters}
    assert frozen and all(not p.requires_grad for n, p in net.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in net.named_parameters() if n not in frozen)
    net.disable_gradient_checkpointing()


def test_precond_output_and_loss_weight_survive_save_load(tmp_path):
    import dataclasses

    from fada.config import load_recipe
    from fada.diffusion import NoiseSchedule, linear_eps_prior, precond_output_scale
    from fada.models.avatar import AvatarNet, build_avatar_net
    from tests.fixtures import TINY_TEST_MODEL

    m = load_recipe("tiny-teacher", TINY_TEST_MODEL + ["model.unet.precond_data_var=0.25",
                                                       "model.unet.precond_ref_var=0"]).model
    net = build_avatar_net(m).eval()
    assert net.precond_data_var == 0.25
    z = torch.randn(2, net.latent_channels, m.num_frames, 16, 16)
    t = torch.tensor([999.0, 10.0])
    feats = torch.randn(2, m.num_frames, *net.audio_feature_shape)
    with torch.no_grad():
        with_skip = net(z, t, feats, None)
        net.precond_data_var = 0.0
        plain = net(z, t, feats, None)
        assert net.eps_loss_weight(t) is None
        net.precond_data_var = 0.25
    sched = NoiseSchedule()
    c, k = linear_eps_prior(t, 0.25, sched), precond_output_scale(t, 0.25, sched)
    torch.testing.assert_close(with_skip, k.view(2, 1, 1, 1, 1) * plain + c.view(2, 1, 1, 1, 1) * z)
    torch.testing.assert_close(net.eps_loss_weight(t), 1 / k ** 2)
    net.save_pretrained(tmp_path / "n")
    again = AvatarNet.from_pretrained(tmp_path / "n").eval()
    assert again.precond_data_var == 0.25
    with torch.no_grad():
        torch.testing.assert_close(again(z, t, feats, None), with_skip)
    student = AvatarNet.from_teacher(net, "tokens")
    assert student.precond_data_var == 0.25
    assert dataclasses.is_dataclass(m)


def test_reference_concat_reads_the_reference_latents_and_survives_save_load(tmp_path):
    from fada.config import load_recipe
    from tests.fixtures import TINY_TEST_MODEL

    from .test_nets import randomize_

    m = load_recipe("tiny-teacher", TINY_TEST_MODEL + ["model.unet.reference_concat=false",
                                                       "model.unet.motion_concat=false"]).model
    torch.manual_seed(0)
    plain = randomize_(build_avatar_net(m), std=0.05).eval()
    cat = AvatarNet.from_configs({**plain.top_config()}, {**plain.part_configs(), "denoising_net": {
        **plain.part_configs()["denoising_net"], "reference_concat": True, "motion_concat": True}}).eval()
    wide = "denoising_net.unet.conv_in.weight"
    res = cat.load_state_dict({k: v for k, v in plain.state_dict().items() if k != wide}, strict=False)
    assert res.missing_keys == [wide] and not res.unexpected_keys
    conv_p, conv_c = plain.denoising_net.unet.conv_in, cat.denoising_net.unet.conv_in
    lc = plain.latent_channels
    assert conv_c.in_channels == 3 * lc and cat.denoising_net.unet.config.in_channels == 3 * lc
    assert cat.reference_net.unet.config.in_channels == lc  # the ReferenceNet reads the plain latents
    assert torch.count_nonzero(conv_c.weight[:, lc:]) == 0  # new input channels start at zero
    with torch.no_grad():
        conv_c.weight[:, :lc].copy_(conv_p.weight)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, lc, m.num_frames, 16, 16, generator=g)
    ref, other = torch.randn(2, 2, lc, 16, 16, generator=g)
    feats = torch.randn(2, m.num_frames, *plain.audio_feature_shape, generator=g)
    t = torch.tensor([300.0, 20.0])
    with torch.no_grad():
        # at init the wider net is the plain one: an SD1.5 init stays undisturbed
        torch.testing.assert_close(cat(z, t, feats, None, ref_latents=ref), plain(z, t, feats, None, ref_latents=ref))
        conv_c.weight[:, lc:].normal_(0, 0.1)
        bank, bank2 = cat.encode_bank(ref), cat.encode_bank(other)
        assert bank.latents.shape == (2, 1, lc, 16, 16) and torch.equal(bank.latents[:, 0], ref)
        a = cat(z, t, feats, bank)
        # the reference channels: only bank.latents differs, so the output moves for kept rows only
        swapped = Bank(bank.tokens, 2, 1, bank2.latents)
        b = cat(z, t, feats, swapped, keep_ref=torch.tensor([True, False]))
        assert (a[0] - b[0]).abs().max() > 1e-3
        no_ref = cat(z, t, feats, bank, keep_ref=torch.tensor([True, False]))
        torch.testing.assert_close(b[1], no_ref[1])  # a dropped reference is zero channels, whatever it was
        # the expected input, computed independently: the frame's latents ++ the reference ++ the latest motion
        # frame, per frame (without motion frames, as at a video's start, the reference stands in for it)
        x = z.permute(0, 2, 1, 3, 4).reshape(-1, lc, 16, 16)
        r, o = ref.repeat_interleave(m.num_frames, 0), other.repeat_interleave(m.num_frames, 0)
        seen = []
        hook = conv_c.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
        cat(z, t, feats, bank)
        cat(z, t, feats, cat.encode_bank(ref, other[:, None]))
        hook.remove()
        torch.testing.assert_close(seen[0], torch.cat([x, r, r], dim=1))
        torch.testing.assert_close(seen[1], torch.cat([x, r, o], dim=1))
    cat.save_pretrained(tmp_path / "n")
    again = AvatarNet.from_pretrained(tmp_path / "n").eval()
    assert again.denoising_net.concat_views == (0, -1) and again.part_configs()["denoising_net"]["unet"]["in_channels"] == lc
    with torch.no_grad():
        torch.testing.assert_close(again(z, t, feats, again.encode_bank(ref)), a)
    student = AvatarNet.from_teacher(again, "tokens")
    assert student.denoising_net.unet.conv_in.in_channels == 3 * lc
    # the bank's latents follow it through the CFG tiling and the per-clip motion views
    motion = cat.encode_bank(ref, other[:, None])
    assert motion.latents.shape == (2, 2, lc, 16, 16) and torch.equal(motion.repeat(3).latents[2:4], motion.latents)
    cached = cat.encode_bank(ref, other[:, None], ref_bank=bank)
    torch.testing.assert_close(cached.latents, motion.latents)


def test_reference_mean_preconditioning_starts_as_a_still_copy(tmp_path):
    """unet.precond_ref_var: with a zero raw output the net's x0 estimate is the minimum-MSE linear one around
    its reference, which at t = 999 is almost the reference itself; a dropped reference keeps the zero-mean prior;
    the loss weight follows each sample's prior; the setting survives save/load and reaches the student."""
    from fada.config import load_recipe
    from fada.diffusion import NoiseSchedule, linear_eps_prior, precond_loss_weight
    from tests.fixtures import TINY_TEST_MODEL

    m = load_recipe("tiny-teacher", TINY_TEST_MODEL + ["model.unet.precond_data_var=0.25",
                                                       "model.unet.precond_ref_var=0.02"]).model
    torch.manual_seed(0)
    net = build_avatar_net(m).eval()
    torch.nn.init.zeros_(net.denoising_net.unet.conv_out.weight)
    torch.nn.init.zeros_(net.denoising_net.unet.conv_out.bias)  # raw output F = 0
    sched = NoiseSchedule()
    ac = sched.alphas_cumprod
    g = torch.Generator().manual_seed(2)
    lc, f = net.latent_channels, m.num_frames
    ref = torch.rand(2, lc, 16, 16, generator=g) * 2 - 1
    x0 = ref[:, :, None] + 0.05 * torch.randn(2, lc, f, 16, 16, generator=g)
    eps = torch.randn(2, lc, f, 16, 16, generator=g)
    t = torch.tensor([999.0, 999.0])
    ab = ac[999]
    z = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    feats = torch.randn(2, f, *net.audio_feature_shape, generator=g)
    with torch.no_grad():
        out = net(z, t, feats, None, keep_ref=torch.tensor([True, False]), ref_latents=ref)
    x0_hat = (z - (1 - ab).sqrt() * out) / ab.sqrt()
    assert float((x0_hat[0] - x0[0]).pow(2).mean()) < 0.01  # the reference, from pure noise
    assert float((x0_hat[1] - x0[1]).pow(2).mean()) > 0.1  # no reference: the zero-mean prior's guess
    c0 = linear_eps_prior(t[:1], 0.25, sched)
    torch.testing.assert_close(out[1], c0 * z[1])
    w = net.eps_loss_weight(t, torch.tensor([True, False]))
    torch.testing.assert_close(w, torch.cat([precond_loss_weight(t[:1], 0.02, sched),
                                             precond_loss_weight(t[:1], 0.25, sched)]))
    net.save_pretrained(tmp_path / "n")
    again = AvatarNet.from_pretrained(tmp_path / "n")
    assert again.precond_ref_var == 0.02 and AvatarNet.from_teacher(again, "tokens").precond_ref_var == 0.02
    with pytest.raises(FadaError, match="precond_ref_var"):
        load_recipe("tiny-teacher", TINY_TEST_MODEL + ["model.unet.precond_data_var=0", "model.unet.precond_ref_var=0.02"])


def test_cfg_layer_keeps_eq10_scale_structure():
    """Eq. 10's embedding is affine in (cfg_a, cfg_r): Emb(s1) + Emb(s2) − Emb(s0) = Emb(s1 + s2 − s0). The CFG layer
    as the paper has it keeps that in its keys; the normalised variant (cfg.normalize) does not."""
    from fada.models.cfg_tokens import CFGTokens
    from fada.models.denoising_net import CFGCrossAttention

    torch.manual_seed(0)
    tokens = CFGTokens(4, 16)
    for p in tokens.parameters():
        torch.nn.init.normal_(p)
    s = torch.tensor([[6.5, 2.0], [8.0, 2.46], [3.0, 1.0]])
    s3 = (s[0] + s[1] - s[2])[None]
    emb = tokens(torch.cat([s, s3]))
    for normalize, holds in ((False, True), (True, False)):
        layer = CFGCrossAttention(8, 2, 16, normalize=normalize)
        k = layer.to_k(layer.norm_cfg(emb))
        gap = (k[0] + k[1] - k[2] - k[3]).abs().max() / k[3].abs().max()
        assert (gap < 1e-5) == holds, (normalize, float(gap))


def test_perflow_student_reads_window_lines_as_their_path_points(tmp_path):
    """A preconditioned PeRFlow student (``precond_windows``) at a window-line point equals its teacher at the
    equivalent noising-path point (window_line_remap), loss weight included; the setting survives save/load; a
    student with precond_windows 0 (TCD) and an unpreconditioned one read their input as it is."""
    from fada.config import load_recipe
    from fada.diffusion import NoiseSchedule, precond_loss_weight, window_line_remap
    from tests.fixtures import TINY_TEST_MODEL

    m = load_recipe("tiny-teacher", TINY_TEST_MODEL + ["model.unet.precond_data_var=0.25",
                                                       "model.unet.precond_ref_var=0"]).model
    torch.manual_seed(1)
    teacher = randomize_(build_avatar_net(m), std=0.02).eval()
    z = torch.randn(3, teacher.latent_channels, m.num_frames, 16, 16)
    t = torch.tensor([1000.0, 500.0, 166.0])
    feats = torch.randn(3, m.num_frames, *teacher.audio_feature_shape)
    student = AvatarNet.from_teacher(teacher, "none", precond_windows=1).eval()
    assert student.precond_windows == 1
    sched = m.schedule.build()  # the recipe's (tiny-teacher ends on ᾱ = 1)
    scale, tau = window_line_remap(t, 1, sched)
    assert float(scale[1]) > 1.3 and 300 < float(tau[1]) < 400       # one window: far from the path mid-way
    with torch.no_grad():
        torch.testing.assert_close(student(z, t, feats, None), teacher(z * scale.view(3, 1, 1, 1, 1), tau, feats, None))
        torch.testing.assert_close(student.eps_loss_weight(t), precond_loss_weight(tau, 0.25, sched))
        student.save_pretrained(tmp_path / "s")
        again = AvatarNet.from_pretrained(tmp_path / "s").eval()
        assert again.precond_windows == 1
        torch.testing.assert_close(again(z, t, feats, None), student(z, t, feats, None))
        tcd = AvatarNet.from_teacher(teacher, "none", precond_windows=0).eval()
        torch.testing.assert_close(tcd(z, t, feats, None), teacher(z, t, feats, None))
    plain = AvatarNet.from_teacher(randomize_(build_avatar_net(tiny_cfg()), std=0.02), "none", precond_windows=4)
    assert plain.precond_windows == 0                                  # the SD-scale student is PeRFlow's own


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_remapped_student_implies_the_teachers_window_end(kind):
    """A preconditioned PeRFlow student at a window-line point implies the window end its teacher's x̂0 and ε̂ at the
    equivalent path point give: √ᾱ_e·x̂0 + √(1−ᾱ_e)·ε̂ (perflow.line_output), for ε and v teachers alike."""
    from fada.config import load_recipe
    from fada.diffusion import implied_endpoint, window_line_remap, window_of
    from tests.fixtures import TINY_TEST_MODEL

    extra = ["model.schedule.prediction_type=v_prediction", "model.schedule.timestep_spacing=trailing",
             "model.schedule.beta_schedule=linear", "model.schedule.rescale_betas_zero_snr=true",
             "model.schedule.set_alpha_to_one=true"] if kind == "v_prediction" else []
    m = load_recipe("tiny-teacher", TINY_TEST_MODEL + ["model.unet.precond_data_var=0.25",
                                                       "model.unet.precond_ref_var=0"] + extra).model
    torch.manual_seed(2)
    teacher = randomize_(build_avatar_net(m), std=0.02).eval()
    sched = teacher.schedule
    assert sched.prediction_type == kind
    student = AvatarNet.from_teacher(teacher, "none", precond_windows=4).eval()
    assert student.schedule == sched
    z = torch.randn(3, teacher.latent_channels, m.num_frames, 16, 16)
    t = torch.tensor([1000.0, 900.0, 400.0])
    feats = torch.randn(3, m.num_frames, *teacher.audio_feature_shape)
    scale, tau = window_line_remap(t, 4, sched)
    with torch.no_grad():
        zp = z * scale.view(3, 1, 1, 1, 1)
        x0, eps = sched.x0_eps(zp, teacher(zp, tau, feats, None), sched.ab_at_timesteps(tau))
        end = implied_endpoint(z, student(z, t, feats, None), t.double() / 1000, 4, sched)
    ab_e = sched.alpha_bar(window_of(t.double() / 1000, 4)[1]).view(3, 1, 1, 1, 1)
    torch.testing.assert_close(end, ab_e.sqrt() * x0 + (1 - ab_e).sqrt() * eps, rtol=1e-4, atol=1e-4)
