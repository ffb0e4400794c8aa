#!/usr/bin/env python
"""Hallo golden tensors on tiny random weights, computed by Hallo's ORIGINAL code (imported unchanged from a
checkout of github.com/fudan-generative-vision/hallo at commit 8fd7c57, ``--hallo DIR``): the procedure that
data/README.md beside this script describes. It needs its own environment (data/README.md lists the versions:
diffusers 0.27.2, einops, omegaconf); the tests never run it. ``FADA_HALLO_GOLDEN=OUT pytest tests/models/hallo
tests/stages/test_import_hallo.py`` then checks fada against the folder it writes.

1. writes a tiny SD1.5-topology unet config (pretrained_models/stable-diffusion-v1-5/unet/config.json) and a tiny
   AutoencoderKL (pretrained_models/sd-vae-ft-mse/{config.json, diffusion_pytorch_model.safetensors});
2. builds Hallo's Net (reference UNet2DConditionModel, UNet3DConditionModel with configs/inference/default.yaml's
   unet_additional_kwargs, FaceLocator, ImageProjModel, AudioProjModel), fills every parameter with the weight
   rule (buffers kept as built), saves net.pth (torch.save of the state dict, keys sorted) and net_keys.json, and the
   reference UNet's weights as the SD unet's diffusion_pytorch_model.safetensors;
3. rebuilds everything along scripts/inference.py's path (from_pretrained / from_pretrained_2d / strict net.pth
   load, gradient checkpointing, DDIMScheduler with zero SNR) and runs FaceAnimatePipeline end to end, capturing
   tensors with hooks and wrappers (nothing of the loop is re-implemented);
4. writes golden.safetensors and golden_meta.json.

Weight rule, for k in sorted(state), parameters only:
  g = torch.Generator().manual_seed(zlib.crc32(k.encode()) + seed)
  *.bias -> (rand-0.5)*0.4 ; other 1-D -> rand*0.8+0.4 ; else randn*sqrt(2/prod(shape[1:]))*0.5
VAE: the same rule with keys prefixed "vae.".

--inputs-from FILE takes the pipeline inputs (in.*, except in.init_noise which the pipeline draws) from an existing
golden.safetensors (used to regenerate the shipped goldens); otherwise inputs are drawn from --input-seed.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import math
import os
import platform
import sys
import types
import zlib
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

HALLO_COMMIT = "8fd7c572a3d43c2a9c1a5473219ce4fc1b6e3ed2"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--hallo", required=True, help="checkout of fudan-generative-vision/hallo (commit 8fd7c57)")
    p.add_argument("--seed", type=int, default=0, help="weight-rule seed")
    p.add_argument("--widths-label", default="small")
    p.add_argument("--block-out-channels", default="32,32,32,32")
    p.add_argument("--cross-attention-dim", type=int, default=48)
    p.add_argument("--norm-num-groups", type=int, default=32)
    p.add_argument("--attention-head-dim", type=int, default=8)
    p.add_argument("--vae-block-out-channels", default="16,16,16,16")
    p.add_argument("--vae-norm-num-groups", type=int, default=8)
    p.add_argument("--audio-intermediate-dim", type=int, default=8)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--video-length", type=int, default=4)
    p.add_argument("--n-motion-frames", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--guidance-scale", type=float, default=3.5)
    p.add_argument("--motion-scale", default="1.0,0.8,1.25")
    p.add_argument("--noise-seed", type=int, default=42, help="generator = torch.manual_seed(N) as inference.py")
    p.add_argument("--input-seed", type=int, default=None, help="seed of the random pipeline inputs (default 1000+seed)")
    p.add_argument("--per-frame-masks", action="store_true",
                   help="region masks move a little from frame to frame (Hallo's inference repeats one mask)")
    p.add_argument("--inputs-from", type=Path, default=None, help="take in.* inputs from this golden.safetensors")
    p.add_argument("--keep-sd-weights", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def ints(s):
    return [int(x) for x in s.split(",")]


def install_xformers_stub():
    """motion_module.py does `import xformers, xformers.ops` at import time; nothing of it is used on CPU."""
    import diffusers  # noqa: F401  (diffusers probes xformers availability at its own import: keep it 'absent')

    for name in ("xformers", "xformers.ops"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = mod
    sys.modules["xformers"].ops = sys.modules["xformers.ops"]


def rule_fill(state: dict, param_names: set, seed: int, prefix: str = ""):
    """The weight rule, in place on the tensors of `state` (sorted keys); returns {key: 'rule' | 'buffer'}."""
    fill = {}
    for k in sorted(state):
        if k not in param_names:
            fill[k] = "buffer"
            continue
        t = state[k]
        shape = tuple(t.shape)
        g = torch.Generator().manual_seed(zlib.crc32((prefix + k).encode()) + seed)
        if k.endswith(".bias"):
            v = (torch.rand(shape, generator=g) - 0.5) * 0.4
        elif len(shape) == 1:
            v = torch.rand(shape, generator=g) * 0.8 + 0.4
        else:
            v = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:])) * 0.5
        with torch.no_grad():
            t.copy_(v.to(t.dtype))
        fill[k] = "rule"
    return fill


def gaussian(h, w, cy, cx, sy, sx):
    y = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    x = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    return torch.exp(-((y[:, None] - cy) ** 2 / (2 * sy ** 2) + (x[None, :] - cx) ** 2 / (2 * sx ** 2)))


def make_inputs(args, ih, iw, lh, lw, n_levels=4):
    """Random pipeline inputs, shaped as scripts/inference.py hands them to FaceAnimatePipeline."""
    seed = 1000 + args.seed if args.input_seed is None else args.input_seed
    g = torch.Generator().manual_seed(seed)
    F_, M = args.video_length, args.n_motion_frames
    inp = OrderedDict()
    inp["in.ref_image_pixels"] = torch.rand((1, 1 + M, 3, ih, iw), generator=g) * 2 - 1
    inp["in.face_emb"] = torch.randn((1, 512), generator=g)
    inp["in.audio_emb"] = torch.randn((1, F_, 5, 12, 768), generator=g) * 0.5
    region = torch.zeros(1, 3, ih, iw)  # face box, deliberately off-centre / non-square
    region[:, :, int(0.22 * ih):int(0.78 * ih), int(0.30 * iw):int(0.72 * iw)] = 1.0
    inp["in.face_region"] = region
    # sep masks as Hallo's ImageProcessor makes them: pose = 1 - blur(face), face = blur(face) - blur(lip),
    # lip = blur(lip); level L has (latent / 2^L)^2 entries (here: average pooling of level 0)
    full_l, face_l, lip_l = [], [], []
    for f in range(F_):
        d = 0.03 * f if args.per_frame_masks else 0.0
        bf = gaussian(lh, lw, 0.45 + d, 0.52 - d / 2, 0.18, 0.14)
        bl = gaussian(lh, lw, 0.70 + d, 0.50, 0.05, 0.10)
        full_l.append(1 - bf)
        face_l.append((bf - bl).clamp(min=0))
        lip_l.append(bl)
    for kind, maps in (("full", full_l), ("face", face_l), ("lip", lip_l)):
        inp[f"_{kind}"] = torch.stack(maps).float()  # (F, lh, lw)
    for lv in range(n_levels):
        for kind in ("full", "face", "lip"):
            m = inp[f"_{kind}"][:, None]
            if lv:
                m = F.avg_pool2d(m, 2 ** lv)
            inp[f"in.{kind}_mask.{lv}"] = m.reshape(F_, -1).contiguous()
    for kind in ("full", "face", "lip"):
        del inp[f"_{kind}"]
    inp["in.motion_scale"] = torch.tensor([float(x) for x in args.motion_scale.split(",")], dtype=torch.float32)
    return inp


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.hallo)
    install_xformers_stub()

    import diffusers
    import einops
    import numpy
    import omegaconf
    import safetensors
    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file
    from torch import nn

    from hallo.animate.face_animate import FaceAnimatePipeline
    from hallo.models.audio_proj import AudioProjModel
    from hallo.models.face_locator import FaceLocator
    from hallo.models.image_proj import ImageProjModel
    from hallo.models.motion_module import VanillaTemporalModule
    from hallo.models.attention import BasicTransformerBlock, TemporalBasicTransformerBlock
    from hallo.models.mutual_self_attention import torch_dfs
    from hallo.models.unet_2d_condition import UNet2DConditionModel
    from hallo.models.unet_3d import UNet3DConditionModel

    # Hallo's own Net (scripts/inference.py; importing the script would pull in its audio/face tool chain)
    class Net(nn.Module):
        def __init__(self, reference_unet, denoising_unet, face_locator, imageproj, audioproj):
            super().__init__()
            self.reference_unet = reference_unet
            self.denoising_unet = denoising_unet
            self.face_locator = face_locator
            self.imageproj = imageproj
            self.audioproj = audioproj

        def forward(self):
            pass

    out = args.out
    pm = out / "pretrained_models"
    sd_unet = pm / "stable-diffusion-v1-5" / "unet"
    vae_dir = pm / "sd-vae-ft-mse"
    hallo_dir = pm / "hallo"
    for d in (sd_unet, vae_dir, hallo_dir):
        d.mkdir(parents=True, exist_ok=True)

    cfg = OmegaConf.load(os.path.join(args.hallo, "configs/inference/default.yaml"))
    unet_additional_kwargs = OmegaConf.to_container(cfg.unet_additional_kwargs)

    # ---- 1. tiny configs ---------------------------------------------------------------------------------------
    boc = ints(args.block_out_channels)
    unet_config = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "attention_head_dim": args.attention_head_dim,
        "block_out_channels": boc,
        "center_input_sample": False,
        "cross_attention_dim": args.cross_attention_dim,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": args.norm_num_groups,
        "out_channels": 4,
        "sample_size": args.height // 8,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }
    vboc = ints(args.vae_block_out_channels)
    vae_config = {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": diffusers.__version__,
        "act_fn": "silu",
        "block_out_channels": vboc,
        "down_block_types": ["DownEncoderBlock2D"] * len(vboc),
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": args.vae_norm_num_groups,
        "out_channels": 3,
        "sample_size": args.height,
        "up_block_types": ["UpDecoderBlock2D"] * len(vboc),
    }
    (sd_unet / "config.json").write_text(json.dumps(unet_config, indent=2, sort_keys=True))
    (vae_dir / "config.json").write_text(json.dumps(vae_config, indent=2, sort_keys=True))

    face_locator_cfg = {"conditioning_embedding_channels": boc[0], "conditioning_channels": 3,
                        "block_out_channels": [16, 32, 64, 128]}
    image_proj_cfg = {"cross_attention_dim": args.cross_attention_dim, "clip_embeddings_dim": 512,
                      "clip_extra_context_tokens": 4}
    audio_proj_cfg = {"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": args.audio_intermediate_dim,
                      "output_dim": 768, "context_tokens": 32}

    # ---- 2. weights --------------------------------------------------------------------------------------------
    vae0 = AutoencoderKL.from_config(AutoencoderKL.load_config(vae_dir))
    vae_state = vae0.state_dict()
    vfill = rule_fill(vae_state, {n for n, _ in vae0.named_parameters()}, args.seed, prefix="vae.")
    assert set(vfill.values()) == {"rule"}, "the VAE has buffers?"
    save_file({k: v.contiguous() for k, v in vae_state.items()}, str(vae_dir / "diffusion_pytorch_model.safetensors"))
    del vae0

    ref0 = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sd_unet))
    cfg3d = UNet3DConditionModel.load_config(sd_unet)  # as from_pretrained_2d edits it
    cfg3d["_class_name"] = "UNet3DConditionModel"
    cfg3d["down_block_types"] = ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"]
    cfg3d["up_block_types"] = ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3
    cfg3d["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    den0 = UNet3DConditionModel.from_config(cfg3d, **unet_additional_kwargs)
    net0 = Net(ref0, den0, FaceLocator(**face_locator_cfg), ImageProjModel(**image_proj_cfg),
               AudioProjModel(**audio_proj_cfg))
    state = net0.state_dict()
    fill = rule_fill(state, {n for n, _ in net0.named_parameters()}, args.seed)
    state = OrderedDict((k, state[k].detach().clone().contiguous()) for k in sorted(state))
    torch.save(state, hallo_dir / "net.pth")
    keys_json = {"seed": args.seed, "keys": [
        {"key": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "fill": fill[k]}
        for k, v in state.items()]}
    (out / "net_keys.json").write_text(json.dumps(keys_json, indent=0))
    save_file({k[len("reference_unet."):]: v for k, v in state.items() if k.startswith("reference_unet.")},
              str(sd_unet / "diffusion_pytorch_model.safetensors"))
    buffers = [k for k in state if fill[k] == "buffer"]
    del net0, ref0, den0

    # ---- 3. scripts/inference.py's build + load path --------------------------------------------------------------
    sched_kwargs = OmegaConf.to_container(cfg.noise_scheduler_kwargs)
    if cfg.enable_zero_snr:
        sched_kwargs.update(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    val_noise_scheduler = DDIMScheduler(**sched_kwargs)
    vae = AutoencoderKL.from_pretrained(str(vae_dir))
    reference_unet = UNet2DConditionModel.from_pretrained(str(pm / "stable-diffusion-v1-5"), subfolder="unet")
    denoising_unet = UNet3DConditionModel.from_pretrained_2d(
        str(pm / "stable-diffusion-v1-5"), str(pm / "motion_module" / "mm_sd_v15_v2.ckpt"), subfolder="unet",
        unet_additional_kwargs=unet_additional_kwargs, use_landmark=False)
    face_locator = FaceLocator(conditioning_embedding_channels=boc[0])
    image_proj = ImageProjModel(cross_attention_dim=denoising_unet.config.cross_attention_dim,
                                clip_embeddings_dim=512, clip_extra_context_tokens=4)
    audio_proj = AudioProjModel(seq_len=5, blocks=12, channels=768, intermediate_dim=args.audio_intermediate_dim,
                                output_dim=768, context_tokens=32).to(device="cpu", dtype=torch.float32)
    for m in (vae, image_proj, reference_unet, denoising_unet, face_locator, audio_proj):
        m.requires_grad_(False)
    reference_unet.enable_gradient_checkpointing()
    denoising_unet.enable_gradient_checkpointing()
    net = Net(reference_unet, denoising_unet, face_locator, image_proj, audio_proj)
    m, u = net.load_state_dict(torch.load(hallo_dir / "net.pth", map_location="cpu", weights_only=True))
    assert len(m) == 0 and len(u) == 0, "Fail to load correct checkpoint."
    assert not reference_unet.training and denoising_unet.training
    pipeline = FaceAnimatePipeline(vae=vae, reference_unet=net.reference_unet, denoising_unet=net.denoising_unet,
                                   face_locator=net.face_locator, scheduler=val_noise_scheduler,
                                   image_proj=net.imageproj)
    pipeline.to(device="cpu", dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)

    # ---- inputs ---------------------------------------------------------------------------------------------------
    lh, lw = args.height // pipeline.vae_scale_factor, args.width // pipeline.vae_scale_factor
    if args.inputs_from:
        src = load_file(str(args.inputs_from))
        inp = OrderedDict((k, v) for k, v in src.items() if k.startswith("in.") and k != "in.init_noise")
        order = ["in.ref_image_pixels", "in.face_emb", "in.audio_emb", "in.face_region"] + [
            f"in.{kind}_mask.{lv}" for lv in range(4) for kind in ("full", "face", "lip")] + ["in.motion_scale"]
        inp = OrderedDict((k, inp[k]) for k in order)
    else:
        inp = make_inputs(args, args.height, args.width, lh, lw)
    motion_scale = [float(x) for x in args.motion_scale.split(",")]  # python floats, as inference.py passes them
    assert torch.equal(inp["in.motion_scale"], torch.tensor(motion_scale, dtype=torch.float32))

    # ---- hooks / wrappers -----------------------------------------------------------------------------------------
    rec = OrderedDict()
    calls = {"image_proj": [], "den_in": [], "den_out": [], "ref_t": [], "sched": []}
    unet_names = {id(mod): n for n, mod in denoising_unet.named_modules()}
    hooks = []

    hooks.append(image_proj.register_forward_hook(lambda _m, _i, o: calls["image_proj"].append(o.clone())))
    hooks.append(face_locator.register_forward_hook(
        lambda _m, _i, o: rec.__setitem__("out.face_locator_features", o.clone())))

    def ref_pre(_m, a, kw):
        calls["ref_t"].append(a[1].clone() if len(a) > 1 else kw["timestep"].clone())
    hooks.append(reference_unet.register_forward_pre_hook(ref_pre, with_kwargs=True))

    def den_pre(_m, a, kw):
        calls["den_in"].append({"sample": a[0].clone(), "ehs": kw["encoder_hidden_states"].clone()})
    hooks.append(denoising_unet.register_forward_pre_hook(den_pre, with_kwargs=True))
    hooks.append(denoising_unet.register_forward_hook(lambda _m, _i, o: calls["den_out"].append(o[0].clone())))

    mm_frames, audio_calls = OrderedDict(), OrderedDict()
    for n, mod in denoising_unet.named_modules():
        parts = n.split(".")
        if len(parts) >= 2 and parts[-2] == "motion_modules" and isinstance(mod, VanillaTemporalModule):
            mm_frames[n] = []
            hooks.append(mod.register_forward_pre_hook(
                lambda _m, a, n=n: mm_frames[n].append(int(a[0].shape[2]))))
        if len(parts) >= 2 and parts[-2] == "audio_modules" and mod is not None:
            audio_calls[n] = 0

            def acount(_m, _a, n=n):
                audio_calls[n] += 1
            hooks.append(mod.register_forward_pre_hook(acount))

    orig_encode = vae.encode

    def encode(x, *a, **kw):
        res = orig_encode(x, *a, **kw)
        rec["out.ref_latents"] = res.latent_dist.mean * 0.18215  # the pipeline's own expression
        return res
    vae.encode = encode

    orig_prepare = pipeline.prepare_latents

    def prepare_latents(*a, **kw):
        lat = orig_prepare(*a, **kw)
        rec["in.init_noise"] = lat.clone()
        return lat
    pipeline.prepare_latents = prepare_latents

    orig_step = val_noise_scheduler.step

    def step(model_output, timestep, sample, *a, **kw):
        res = orig_step(model_output, timestep, sample, *a, **kw)
        prev = res[0] if isinstance(res, tuple) else res.prev_sample
        calls["sched"].append((model_output.clone(), sample.clone(), prev.clone()))
        return res
    val_noise_scheduler.step = step

    orig_decode = pipeline.decode_latents

    def decode_latents(latents):
        rec["out.final_latents"] = latents.clone()
        return orig_decode(latents)
    pipeline.decode_latents = decode_latents

    # ---- 4. run ------------------------------------------------------------------------------------------------
    levels = sorted({int(k.rsplit(".", 1)[1]) for k in inp if k.startswith("in.full_mask.")})
    with torch.no_grad():
        audio_tensor = net.audioproj(inp["in.audio_emb"].to(device=net.audioproj.device, dtype=net.audioproj.dtype))
        generator = torch.manual_seed(args.noise_seed)
        pipeline(
            ref_image=inp["in.ref_image_pixels"],
            audio_tensor=audio_tensor,
            face_emb=inp["in.face_emb"],
            face_mask=inp["in.face_region"],
            pixel_values_full_mask=[inp[f"in.full_mask.{lv}"] for lv in levels],
            pixel_values_face_mask=[inp[f"in.face_mask.{lv}"] for lv in levels],
            pixel_values_lip_mask=[inp[f"in.lip_mask.{lv}"] for lv in levels],
            width=args.width,
            height=args.height,
            video_length=args.video_length,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            generator=generator,
            motion_scale=motion_scale,
        )
    for h in hooks:
        h.remove()

    # reader / writer pairing exactly as ReferenceAttentionControl.update(fusion_blocks="full") forms it
    wnames = {id(mod): n for n, mod in reference_unet.named_modules()}
    readers = sorted([mm for mm in torch_dfs(denoising_unet) if isinstance(mm, TemporalBasicTransformerBlock)],
                     key=lambda x: -x.norm1.normalized_shape[0])
    writers = sorted([mm for mm in torch_dfs(reference_unet) if isinstance(mm, BasicTransformerBlock)],
                     key=lambda x: -x.norm1.normalized_shape[0])
    pairing = [[unet_names[id(r)], wnames[id(w)]] for r, w in zip(readers, writers)]

    # ---- 5. golden tensors ------------------------------------------------------------------------------------
    n_steps = len(calls["sched"])
    assert n_steps == args.steps == len(calls["den_out"]) and len(calls["image_proj"]) == 2
    g = OrderedDict()
    for k, v in inp.items():
        g[k] = v.float().contiguous()
    g["in.init_noise"] = rec["in.init_noise"]
    g["out.audio_tokens"] = audio_tensor
    g["out.image_tokens_cond"], g["out.image_tokens_uncond"] = calls["image_proj"]
    g["out.face_locator_features"] = rec["out.face_locator_features"]
    g["out.ref_latents"] = rec["out.ref_latents"]
    g["out.ref_unet_timestep"] = calls["ref_t"][0].reshape(-1)
    g["out.encoder_hidden_states"] = calls["den_in"][0]["ehs"]
    cmu = []
    for k in range(n_steps):
        cfg_out, lat_in, lat_out = calls["sched"][k]
        u, c = calls["den_out"][k].chunk(2)
        din = calls["den_in"][k]["sample"]
        assert torch.equal(din, torch.cat([lat_in] * 2))
        g[f"step{k}.latents_in"] = lat_in
        g[f"step{k}.noise_pred_uncond"] = u
        g[f"step{k}.noise_pred_cond"] = c
        g[f"step{k}.noise_pred_cfg"] = cfg_out
        g[f"step{k}.latents_out"] = lat_out
        cmu.append(float((c - u).abs().max()))
    g["timesteps"] = val_noise_scheduler.timesteps.clone()
    g["out.final_latents"] = rec["out.final_latents"]
    assert torch.equal(g["out.final_latents"], g[f"step{n_steps - 1}.latents_out"])
    g = OrderedDict((k, v.detach().contiguous()) for k, v in g.items())
    save_file(dict(g), str(out / "golden.safetensors"))

    pipe_meta = {"width": args.width, "height": args.height, "video_length": args.video_length,
                 "n_motion_frames": args.n_motion_frames, "num_inference_steps": args.steps,
                 "guidance_scale": args.guidance_scale, "generator": f"torch.manual_seed({args.noise_seed})",
                 "eta": 0.0, "motion_scale": motion_scale, "dtype": "float32", "threads": args.threads}
    called = {k: v for k, v in mm_frames.items() if v}
    meta = OrderedDict([
        ("hallo_commit", HALLO_COMMIT),
        ("seed", args.seed),
        ("widths", args.widths_label),
        ("versions", {"python": platform.python_version(), "torch": torch.__version__,
                      "diffusers": diffusers.__version__, "einops": einops.__version__,
                      "omegaconf": omegaconf.__version__, "safetensors": safetensors.__version__,
                      "numpy": numpy.__version__, "xformers": "stub (not used)"}),
        ("unet_config", unet_config),
        ("vae_config", vae_config),
        ("unet_additional_kwargs", unet_additional_kwargs),
        ("face_locator", face_locator_cfg),
        ("image_proj", image_proj_cfg),
        ("audio_proj", audio_proj_cfg),
        ("scheduler", {k: v for k, v in val_noise_scheduler.config.items() if not k.startswith("_")}),
        ("pipeline", pipe_meta),
        ("timesteps", g["timesteps"].tolist()),
        ("buffers_kept_as_built", buffers),
        ("motion_module_input_frames_per_call", called),
        ("motion_modules_never_called", [k for k, v in mm_frames.items() if not v]),
        ("audio_module_calls", dict(audio_calls)),
        ("reference_bank_pairing_reader_writer", pairing),
        ("cond_minus_uncond_absmax", cmu),
        ("sd_unet_weights_file_kept", bool(args.keep_sd_weights)),
        ("tensors", {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in g.items()}),
    ])
    (out / "golden_meta.json").write_text(json.dumps(meta, indent=1))
    if not args.keep_sd_weights:
        (sd_unet / "diffusion_pytorch_model.safetensors").unlink()
    print(json.dumps({"timesteps": meta["timesteps"], "cond_minus_uncond_absmax": cmu,
                      "never_called": meta["motion_modules_never_called"],
                      "frames": {k: v[0] for k, v in called.items()},
                      "structural_pairing": all(a == b for a, b in pairing)}, indent=None))


if __name__ == "__main__":
    main()
