"""fada's Hallo parts against Hallo's own outputs (data/README.md): projections, face locator, VAE latents and the
denoising net's unconditional / conditional predictions at three DDIM steps, each within 1e-4 relative (max abs
error / max abs value) in float32. The mutation tests break one Hallo behaviour at a time and check that the
comparison then fails, so the parity tests tell a faithful port from a near miss.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest
import torch

from fada.models.attention import BankReadProcessor
from fada.models.conditioning import Portrait, stack_region_masks
from fada.models.denoising_net import SpatialTemporalBlock
from fada.models.hallo_keys import _motion_key
from fada.models.temporal_modules import AnimateDiffTemporal

from .conftest import golden_dir

RTOL = 1e-4
LEVELS = 4  # Hallo's four attention resolutions (its pixel_values_*_mask lists)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


def make_portrait(golden, order=(0, 1, 2)) -> Portrait:
    """Hallo's pipeline inputs as one Portrait (one clip); ``order`` permutes the full / face / lip masks."""
    masks = [golden[f"in.{kind}_mask.{lv}"] for kind in ("full", "face", "lip") for lv in range(LEVELS)]
    full, face, lip = (masks[i * LEVELS:(i + 1) * LEVELS] for i in order)
    return Portrait(face_embeds=golden["in.face_emb"], face_region=golden["in.face_region"],
                    region_masks=stack_region_masks(full, face, lip), motion_scale=golden["in.motion_scale"])


def guidance_bank(net, golden):
    lat = golden["out.ref_latents"]  # [reference, motion 1, motion 2]
    return net.encode_guidance_bank(lat[:1], lat[1:][None], golden["in.face_emb"], keep_ref=(False, True))


@torch.no_grad()
def predictions(net, golden, steps=None, portrait=None, bank=None) -> dict[str, torch.Tensor]:
    """{'stepK.noise_pred_uncond' / '_cond': ...} from fada's model_fn, Hallo's batch [uncond, cond]: the uncond row
    drops audio and the reference condition (no reference view in attn1, image_proj(0) identity tokens, zero
    face-locator features); its motion frames still come from the bank."""
    bank = guidance_bank(net, golden) if bank is None else bank
    fn = net.model_fn(bank, golden["in.audio_emb"], portrait=portrait or make_portrait(golden))
    keep = torch.tensor([False, True])
    out = {}
    for k in range(len(golden["timesteps"])) if steps is None else steps:
        z = golden[f"step{k}.latents_in"]
        uncond, cond = fn(torch.cat([z, z]), golden["timesteps"][k], keep, keep).chunk(2)
        out[f"step{k}.noise_pred_uncond"], out[f"step{k}.noise_pred_cond"] = uncond, cond
    return out


def worst(got: dict, golden) -> float:
    return max(rel_err(v, golden[k]) for k, v in got.items())


@pytest.fixture(scope="module")
def preds(hallo_net, golden):
    return predictions(hallo_net, golden)


# ---------------------------------------------------------------------------------------------------------------
# parity


@torch.no_grad()
def test_projections_and_face_locator(hallo_net, golden):
    net = hallo_net
    assert rel_err(net.audio_tokens(golden["in.audio_emb"]), golden["out.audio_tokens"]) < RTOL
    face = golden["in.face_emb"]
    assert rel_err(net.identity_proj(face), golden["out.image_tokens_cond"]) < RTOL
    assert rel_err(net.identity_proj(torch.zeros_like(face)), golden["out.image_tokens_uncond"]) < RTOL
    assert rel_err(net.identity_proj.tokens(torch.cat([face, face]), torch.tensor([False, True])),
                   golden["out.encoder_hidden_states"]) < RTOL
    feats = net.denoising_net.face_locator(golden["in.face_region"])  # every frame gets the same features
    want = golden["out.face_locator_features"]
    assert rel_err(feats[:, :, None].expand_as(want), want) < RTOL


def test_reference_latents(golden, tmp_path):
    from fada.models.vae import SDVAE

    shutil.copytree(golden_dir() / "pretrained_models" / "sd-vae-ft-mse", tmp_path / "vae")  # an SD folder's vae/
    vae = SDVAE(tmp_path)
    assert rel_err(vae.encode(golden["in.ref_image_pixels"][0]), golden["out.ref_latents"]) < RTOL


@pytest.mark.parametrize("row", ["uncond", "cond"])
def test_denoising_predictions(preds, golden, row):
    for step in range(len(golden["timesteps"])):
        key = f"step{step}.noise_pred_{row}"
        assert rel_err(preds[key], golden[key]) < RTOL, key


def test_guided_ddim_steps(preds, golden, meta):
    """Hallo's guidance (uncond + 3.5·(cond − uncond)) and its zero-SNR v-prediction DDIM step on fada's
    predictions reproduce the next latents (diffusers' scheduler, as Hallo's pipeline runs it)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**meta["scheduler"])
    sched.set_timesteps(len(golden["timesteps"]))
    assert sched.timesteps.tolist() == golden["timesteps"].tolist()
    for k, t in enumerate(sched.timesteps):
        u, c = preds[f"step{k}.noise_pred_uncond"], preds[f"step{k}.noise_pred_cond"]
        cfg = u + meta["pipeline"]["guidance_scale"] * (c - u)
        assert rel_err(cfg, golden[f"step{k}.noise_pred_cfg"]) < RTOL
        nxt = sched.step(cfg, t, golden[f"step{k}.latents_in"], eta=0.0).prev_sample
        assert rel_err(nxt, golden[f"step{k}.latents_out"]) < RTOL


# ---------------------------------------------------------------------------------------------------------------
# mutations: each breaks one Hallo behaviour; step 0 alone must then miss the goldens


def _blocks(net):
    return [m for m in net.denoising_net.modules() if isinstance(m, SpatialTemporalBlock)]


@contextmanager
def _setattrs(objs, name, value):
    old = [getattr(o, name) for o in objs]
    for o in objs:
        setattr(o, name, value)
    try:
        yield
    finally:
        for o, v in zip(objs, old):
            setattr(o, name, v)


@contextmanager
def _part(net, key, value):
    parts = net.denoising_net.parts
    old, parts[key] = parts[key], value
    try:
        yield
    finally:
        parts[key] = old


def test_mutation_baseline_step0(hallo_net, golden):
    assert worst(predictions(hallo_net, golden, steps=(0,)), golden) < RTOL


def test_mutation_motion_prefix_off(hallo_net, golden):
    with _setattrs(_blocks(hallo_net), "motion_prefix", False):
        assert worst(predictions(hallo_net, golden, steps=(0,)), golden) > RTOL


def test_mutation_dead_motion_modules_run(hallo_net, golden, hallo_state, meta):
    """The lowest level's motion modules (Hallo's DownBlock3D / UpBlock3D, never called in training mode) run
    after their resnets, as Hallo's eval-mode branch would run them."""
    unet, hooks = hallo_net.denoising_net.unet, []
    width, frames = meta["unet_config"]["block_out_channels"][-1], meta["pipeline"]["video_length"]
    for block, count in (("down_blocks.3", 2), ("up_blocks.0", 3)):
        for j in range(count):
            prefix = f"denoising_unet.{block}.motion_modules.{j}.temporal_transformer."
            mm = AnimateDiffTemporal(width)
            mm.load_state_dict({_motion_key(k[len(prefix):]): v for k, v in hallo_state.items()
                                if k.startswith(prefix) and not k.endswith(".pe")})
            resnet = unet.get_submodule(f"{block}.resnets.{j}")
            hooks.append(resnet.register_forward_hook(lambda _m, _i, out, mm=mm: mm.eval()(out, frames)))
    try:
        assert worst(predictions(hallo_net, golden, steps=(0,)), golden) > RTOL
    finally:
        for h in hooks:
            h.remove()


def test_mutation_uncond_identity_zero(hallo_net, golden, monkeypatch):
    """Unconditional identity tokens all zero instead of image_proj(0) (in the bank pass and in attn2)."""
    proj = hallo_net.identity_proj
    real = proj.tokens

    def zero_dropped(embeds, keep=None):
        tok = real(embeds)
        if keep is None:
            return tok
        keep = torch.as_tensor(keep).bool().reshape(-1, 1, 1)
        return torch.where(keep, tok, torch.zeros_like(tok))

    monkeypatch.setattr(proj, "tokens", zero_dropped)
    assert worst(predictions(hallo_net, golden, steps=(0,)), golden) > RTOL


def test_mutation_masks_full_lip_swapped(hallo_net, golden):
    assert worst(predictions(hallo_net, golden, steps=(0,), portrait=make_portrait(golden, (2, 1, 0))), golden) > RTOL


def test_mutation_bank_not_interleaved(hallo_net, golden):
    """Each branch's views encoded with its own identity tokens (not Hallo's tiled [u, c, u] / [c, u, c])."""
    lat, face = golden["out.ref_latents"], golden["in.face_emb"]
    tokens = hallo_net.identity_proj.tokens(torch.cat([face, face]), torch.tensor([False, True]))
    with torch.no_grad():
        bank = hallo_net.encode_bank(lat[:1].repeat(2, 1, 1, 1), lat[1:][None].repeat(2, 1, 1, 1, 1),
                                     identity_tokens=tokens)
    assert worst(predictions(hallo_net, golden, steps=(0,), bank=bank), golden) > RTOL


def test_mutation_reference_read_per_clip(hallo_net, golden):
    """Every frame reads its own clip's reference view (Hallo's tiling gives the cond clip's even frames the
    reference as the uncond branch encoded it)."""
    with _part(hallo_net, "bank_pairing", "clip"):
        assert worst(predictions(hallo_net, golden, steps=(0,)), golden) > RTOL


def test_mutation_attn1_reads_motion_views(hallo_net, golden):
    procs = [m.processor for m in hallo_net.denoising_net.modules()
             if isinstance(getattr(m, "processor", None), BankReadProcessor)]
    with _setattrs(procs, "read_views", None):
        assert worst(predictions(hallo_net, golden, steps=(0,)), golden) > RTOL


def test_mutation_bank_float32(hallo_net, golden):
    """Hallo's reader keeps a float16 copy of the bank; reading it in float32 moves the predictions by about
    5e-5 -- under the 1e-4 tolerance, so this one is checked against the port's own error (about 1e-5)."""
    with _part(hallo_net, "bank_dtype", None):
        assert worst(predictions(hallo_net, golden, steps=(0,)), golden) > 2.5e-5
