"""Hallo's ``net.pth`` in fada's nets: where every key goes, and why the few that go nowhere are left out.

Hallo saves one state dict for its whole ``Net`` (prefixes ``reference_unet.``, ``denoising_unet.``,
``face_locator.``, ``imageproj.``, ``audioproj.``). fada keeps the same weights in four parts:

- ``reference_net``: ``reference_unet.K`` -> ``unet.K`` (Hallo's reference UNet has no ``conv_norm_out`` /
  ``conv_out``: nothing after its last bank write is ever used; fada's keeps them, unused and frozen);
- ``denoising_net`` (a DenoisingNet with ``net_parts.HALLO_PARTS``): the 3-D UNet's resnets, spatial
  transformers and convolutions are the 2-D UNet's keys (``unet.K``; a spatial transformer is wrapped, so
  ``B.attentions.j.K`` -> ``unet.B.attentions.j.spatial.K``); ``B.audio_modules.j`` -> the audio block after that
  transformer (``unet.B.attentions.j.audio``, its three cross-attentions ``attn2_0/1/2`` named by region:
  ``attn_full/face/lip``, ``zero_conv_*`` -> ``conv_*``); ``B.motion_modules.j.temporal_transformer`` -> the temporal
  module after it (``unet.B.attentions.j.temporal``, ``transformer_blocks.n.attention_blocks.m`` ->
  ``blocks.n.attentions.m``); ``face_locator.K`` -> ``face_locator.K``;
- ``identity_proj``: ``imageproj.K`` -> ``K``;
- ``audio_proj`` (an ``AudioProjection`` of kind 'hallo'): ``audioproj.proj1/2/3`` -> ``mlp.0/2/4``, ``norm``.

Ignored, with the reason recorded: the motion modules of the levels without attention (``DownBlock3D`` /
``UpBlock3D``, the lowest level). Hallo builds its denoising UNet with ``from_config`` (training mode) and turns on
gradient checkpointing; the training-mode branch of those two blocks checkpoints the resnets and never calls the
motion modules, so they are dead weights at inference. And the ``pos_encoder.pe`` buffers: AnimateDiff's fixed
sinusoidal table, which fada's temporal module rebuilds (checked equal here).
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

import torch
from torch import Tensor

from fada.diffusion import NoiseSchedule
from fada.errors import FadaError

from .temporal_modules import sinusoidal_positions

PREFIX_PARTS = {"reference_unet.": "reference_net", "denoising_unet.": "denoising_net",
                "face_locator.": "denoising_net", "imageproj.": "identity_proj", "audioproj.": "audio_proj"}
DEAD_MOTION = ("never runs: Hallo's DownBlock3D/UpBlock3D (levels without attention) skip their motion modules in "
               "training mode, which from_pretrained_2d leaves the denoising UNet in, with gradient checkpointing on")
PE_TABLE = "AnimateDiff's fixed sinusoidal position table; the temporal module rebuilds it (checked equal)"
REFERENCE_UNUSED = ("conv_norm_out.", "conv_out.")  # fada's ReferenceNet has them; Hallo's does not
# Hallo's inference scheduler (configs/inference/default.yaml noise_scheduler_kwargs with enable_zero_snr, the rest
# DDIMScheduler's defaults): what its teacher predicts and where its DDIM steps sit
HALLO_SCHEDULE = NoiseSchedule(beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                               prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=1,
                               set_alpha_to_one=True, rescale_betas_zero_snr=True)

_BLOCK = r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)"
_AUDIO_RENAMES = {"attn2_0": "attn_full", "attn2_1": "attn_face", "attn2_2": "attn_lip",
                  "zero_conv_full": "conv_full", "zero_conv_face": "conv_face", "zero_conv_lip": "conv_lip"}


def _audio_key(rest: str) -> Optional[str]:
    if rest.split(".")[0] in ("norm", "proj_in", "proj_out"):
        return rest
    m = re.fullmatch(r"transformer_blocks\.0\.([a-z0-9_]+)\.(.+)", rest)
    if m is None:
        return None  # a second transformer layer: fada's audio block has one, as Hallo builds it
    name = _AUDIO_RENAMES.get(m.group(1), m.group(1))
    return f"{name}.{m.group(2)}"


def _motion_key(rest: str) -> Optional[str]:
    if rest.split(".")[0] in ("norm", "proj_in", "proj_out"):
        return rest
    m = re.fullmatch(r"transformer_blocks\.(\d+)\.(attention_blocks|norms|ff_norm|ff)(.*)", rest)
    if m is None:
        return None
    sub = "attentions" if m.group(2) == "attention_blocks" else m.group(2)
    return f"blocks.{m.group(1)}.{sub}{m.group(3)}"


def _denoising_key(k: str, plain_blocks: set) -> tuple[Optional[str], Optional[str]]:
    """(fada key, None) or (None, reason to ignore) or (None, None) when unmapped."""
    m = re.fullmatch(_BLOCK + r"\.(attentions|audio_modules|motion_modules)\.(\d+)\.(.+)", k)
    if m is None:
        return "unet." + k, None
    block, kind, j, rest = m.groups()
    if kind == "attentions":
        return f"unet.{block}.attentions.{j}.spatial.{rest}", None
    if kind == "audio_modules":
        sub = _audio_key(rest)
        return (None, None) if sub is None else (f"unet.{block}.attentions.{j}.audio.{sub}", None)
    if block in plain_blocks:
        return None, DEAD_MOTION
    if not rest.startswith("temporal_transformer."):
        return None, None
    rest = rest[len("temporal_transformer."):]
    if rest.endswith(".pos_encoder.pe"):
        return None, PE_TABLE
    sub = _motion_key(rest)
    return (None, None) if sub is None else (f"unet.{block}.attentions.{j}.temporal.{sub}", None)


def _check_pe(k: str, v: Tensor) -> None:
    expect = sinusoidal_positions(v.shape[-2], v.shape[-1])
    if v.ndim != 3 or not torch.allclose(v[0].float(), expect, atol=1e-6):
        raise FadaError(f"{k}: not AnimateDiff's sinusoidal position table; fada's temporal module cannot hold it")


def map_hallo_state(state: dict, expected: Optional[dict[str, Iterable[str]]] = None
                    ) -> tuple[dict[str, dict[str, Tensor]], dict[str, str]]:
    """Hallo ``net.pth`` state -> ({part: state dict}, {ignored Hallo key: reason}).

    ``expected`` ({part: its state-dict keys}): a mapped key the part does not have counts as unmapped. Every key
    must be mapped or ignored; otherwise one FadaError line lists the unmapped keys."""
    parts: dict[str, dict[str, Tensor]] = {p: {} for p in dict.fromkeys(PREFIX_PARTS.values())}
    ignored: dict[str, str] = {}
    unmapped: list[str] = []
    den_keys = [k[len("denoising_unet."):] for k in state if k.startswith("denoising_unet.")]
    with_attn = {m.group(1) for k in den_keys if (m := re.match(_BLOCK + r"\.attentions\.", k))}
    plain = {m.group(1) for k in den_keys if (m := re.match(_BLOCK + r"\.", k))} - with_attn
    exp = {p: set(keys) for p, keys in (expected or {}).items()}
    for k, v in state.items():
        prefix = next((p for p in PREFIX_PARTS if k.startswith(p)), None)
        if prefix is None:
            unmapped.append(k)
            continue
        part, rest = PREFIX_PARTS[prefix], k[len(prefix):]
        target, reason = None, None
        if prefix == "reference_unet.":
            target = "unet." + rest
        elif prefix == "denoising_unet.":
            target, reason = _denoising_key(rest, plain)
        elif prefix == "face_locator.":
            target = "face_locator." + rest
        elif prefix == "imageproj.":
            target = rest
        else:
            m = re.fullmatch(r"proj([123])\.(weight|bias)", rest)
            target = f"mlp.{2 * (int(m.group(1)) - 1)}.{m.group(2)}" if m else (rest if rest.startswith("norm.")
                                                                               else None)
        if reason is not None:
            if reason is PE_TABLE:
                _check_pe(k, v)
            ignored[k] = reason
        elif target is None or (part in exp and target not in exp[part]):
            unmapped.append(k)
        else:
            parts[part][target] = v
    if unmapped:
        more = f", … (+{len(unmapped) - 5})" if len(unmapped) > 5 else ""
        raise FadaError(f"Hallo checkpoint: {len(unmapped)} key(s) have no place in fada's nets: "
                        f"{', '.join(unmapped[:5])}{more}")
    return parts, ignored


def load_hallo_state(state: dict, modules: dict) -> dict[str, str]:
    """Load a Hallo ``net.pth`` state into fada modules {part: module} (parts as ``map_hallo_state``; a part
    left out of ``modules`` must then have no keys in ``state``). Strict: every parameter of every module is
    filled, except the ReferenceNet's output convolutions Hallo's reference UNet does not have. Returns the
    ignored keys with their reasons."""
    parts, ignored = map_hallo_state(state, {p: m.state_dict().keys() for p, m in modules.items()})
    extra = [p for p, sd in parts.items() if sd and p not in modules]
    if extra:
        raise FadaError(f"Hallo checkpoint: weights for {', '.join(extra)} but no such module was given")
    for part, module in modules.items():
        missing = set(module.state_dict()) - set(parts[part])
        if part == "reference_net":
            missing = {k for k in missing if not k.startswith(tuple("unet." + u for u in REFERENCE_UNUSED))}
        if missing:
            more = f" (+{len(missing) - 3})" if len(missing) > 3 else ""
            raise FadaError(f"Hallo checkpoint: {part} lacks {', '.join(sorted(missing)[:3])}{more}")
        module.load_state_dict(parts[part], strict=False)
    return ignored


def hallo_avatar(unet_config: dict, image_proj: Optional[dict] = None, audio_proj: Optional[dict] = None,
                 face_locator: Optional[dict] = None, motion_module: Optional[dict] = None, audio_dim: int = 768,
                 attention_backend: str = "sdpa", schedule=None):
    """A randomly initialised AvatarNet shaped as Hallo's Net, from Hallo's configs: the SD1.5 ``unet_config``
    (``unet/config.json``), ``image_proj`` (ImageProjModel's clip_embeddings_dim, clip_extra_context_tokens),
    ``audio_proj`` (AudioProjModel's seq_len, blocks, channels, intermediate_dim, output_dim, context_tokens),
    ``face_locator`` (conditioning_channels, block_out_channels; its output width is the UNet's first),
    ``motion_module`` (num_attention_heads, temporal_position_encoding_max_len) and ``audio_attention_dim``;
    ``schedule``: its ``NoiseSchedule`` (default ``HALLO_SCHEDULE``). Defaults: Hallo's inference settings."""
    from .avatar import AvatarNet
    from .avatar_folder import FORMAT, VERSION
    from .net_parts import HALLO_PARTS

    ip = {"clip_embeddings_dim": 512, "clip_extra_context_tokens": 4, **(image_proj or {})}
    ap = {"seq_len": 5, "blocks": 12, "channels": 768, "intermediate_dim": 512, "output_dim": 768,
          "context_tokens": 32, **(audio_proj or {})}
    fl = {"conditioning_channels": 3, "block_out_channels": [16, 32, 64, 128], **(face_locator or {})}
    mm = {"num_attention_heads": 8, "temporal_position_encoding_max_len": 32, **(motion_module or {})}
    unet = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    d = int(unet["cross_attention_dim"])
    parts = dict(HALLO_PARTS, temporal={"kind": "animatediff", "heads": int(mm["num_attention_heads"]),
                                        "max_len": int(mm["temporal_position_encoding_max_len"])},
                 audio={"kind": "hallo", "audio_dim": int(audio_dim)},
                 face_locator={"in_channels": int(fl["conditioning_channels"]),
                               "widths": [int(w) for w in fl["block_out_channels"]]})
    top = {"format": FORMAT, "version": VERSION, "student": False, "cfg_mode": "none",
           "latent_channels": int(unet.get("in_channels", 4)),
           "audio_feature_shape": [int(ap["seq_len"]), int(ap["blocks"]), int(ap["channels"])],
           "schedule": (schedule or HALLO_SCHEDULE).to_dict()}
    configs = {
        "reference_net": {"unet": unet},
        "denoising_net": {"unet": unet, "temporal_heads": 8, "max_frames": 32, "cfg_dim": None,
                          "time_cond_dim": None, "cfg_norm": False, "parts": parts},
        "audio_proj": {"feature_layers": int(ap["blocks"]), "feature_dim": int(ap["channels"]),
                       "window": (int(ap["seq_len"]) - 1) // 2, "n_tokens": int(ap["context_tokens"]),
                       "hidden_dim": int(ap["intermediate_dim"]), "out_dim": int(ap["output_dim"]), "kind": "hallo"},
        "cfg": {"mode": "none", "n_tokens": 4, "dim": d},
        "identity_proj": {"embed_dim": int(ip["clip_embeddings_dim"]), "n_tokens": int(ip["clip_extra_context_tokens"]),
                          "dim": d},
    }
    return AvatarNet.from_configs(top, configs, attention_backend)


def load_hallo_checkpoint(net, checkpoint) -> dict[str, str]:
    """Fill an AvatarNet made by ``hallo_avatar`` from Hallo's ``net.pth`` (a path, read with
    ``torch.load(weights_only=True)``: tensors only, no code runs) or its state dict. Returns the ignored keys
    with their reasons."""
    state = checkpoint
    if not isinstance(checkpoint, dict):
        try:
            state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        except Exception as e:  # unreadable, or a pickle that is more than tensors
            raise FadaError(f"{checkpoint}: not a readable Hallo checkpoint ({type(e).__name__}: {e})") from None
    modules = {p: getattr(net, p) for p in ("reference_net", "denoising_net", "audio_proj", "identity_proj")}
    ignored = load_hallo_state(state, modules)
    net.freeze_unused_()
    return ignored
