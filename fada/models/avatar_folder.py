"""An AvatarNet as a folder of parts: its configs, and writing / reading it (safetensors only, never pickle).

Layout (``AvatarNet.save_pretrained`` / ``from_pretrained``)::

    avatar_config.json                 format, version, student, cfg_mode, latent_channels, audio_feature_shape,
                                       preconditioning, schedule (its NoiseSchedule), the parts present
    reference_net/config.json          {"unet": diffusers UNet2DConditionModel config}
    reference_net/model.safetensors
    denoising_net/config.json          {"unet": ..., "temporal_heads", "max_frames", "cfg_dim", "time_cond_dim",
                                       CPU-scale options, "parts" when not the defaults (net_parts)}
    denoising_net/model.safetensors
    audio_proj/config.json             AudioProjection arguments (its kind when not fada's)
    audio_proj/model.safetensors
    cfg/config.json                    {"mode", "n_tokens", "dim", "time_cond_dim"}
    cfg/model.safetensors              (γ tokens / MLP; empty for modes without parameters)
    identity_proj/                     only for nets whose cross-attention reads identity tokens (Hallo's)

Loading is strict: a missing file, unreadable JSON or safetensors, a missing/extra key or a wrong shape is a
one-line FadaError naming the file. Folders written before a key existed read as fada's defaults then (an SD1.5
schedule, normalised CFG layers, default parts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from fada.diffusion import NoiseSchedule, as_schedule
from fada.errors import FadaError, MissingFileError

from .cfg_tokens import TIME_COND_DIM, CFGConditioning
from .denoising_net import DenoisingNet
from .loading import (CONFIG_NAME, load_weights, read_config, read_json, save_part, unet_config_dict,
                      unet_from_config_dict)
from .reference_net import ReferenceNet

FORMAT = "fada-avatar"
VERSION = 1
TOP_CONFIG = "avatar_config.json"
PARTS = ("reference_net", "denoising_net", "audio_proj", "cfg")
OPTIONAL_PARTS = ("identity_proj",)


def _audio_projection(config: dict):
    from .audio import AudioProjection

    return AudioProjection(**config)


def _audio_config(audio_proj) -> dict:
    keys = ("feature_layers", "feature_dim", "window", "n_tokens", "hidden_dim", "out_dim")
    out = {k: int(audio_proj.config[k]) for k in keys}
    if audio_proj.config.get("kind", "fada") != "fada":
        out["kind"] = audio_proj.config["kind"]
    return out


def _schedule(cfg: Optional[dict], where) -> NoiseSchedule:
    """The net's schedule from its top config; folders written before it was recorded are SD1.5's."""
    try:
        return as_schedule(cfg)
    except ValueError as e:
        raise FadaError(f"{where}: schedule: {e}") from None


def present_parts(net) -> tuple:
    """The parts a net has: PARTS, then the optional ones it carries."""
    return PARTS + tuple(p for p in OPTIONAL_PARTS if getattr(net, p) is not None)


def part_configs(net) -> dict:
    dn = net.denoising_net
    dn_unet = dn.base_unet_config()  # the added reference channels are rebuilt from reference_concat
    dn_unet["time_cond_proj_dim"] = None  # the cond_proj is added by DenoisingNet from time_cond_dim
    extra = {} if dn.part_config() is None else {"parts": dn.part_config()}
    optional = {p: dict(getattr(net, p).config) for p in present_parts(net)[len(PARTS):]}
    return {
        "reference_net": {"unet": unet_config_dict(net.reference_net.unet)},
        "denoising_net": {"unet": dn_unet, "temporal_heads": dn.temporal_heads, "max_frames": dn.max_frames,
                          "cfg_dim": dn.cfg_dim, "time_cond_dim": dn.time_cond_dim,
                          "bank_positions": dn.bank_positions, "reference_concat": dn.reference_concat,
                          "motion_concat": dn.motion_concat, "cfg_norm": dn.cfg_norm, **extra},
        "audio_proj": _audio_config(net.audio_proj),
        "cfg": net.cfg.config,
        **optional,
    }


def top_config(net) -> dict:
    return {"format": FORMAT, "version": VERSION, "student": net.student, "cfg_mode": net.cfg.mode,
            "latent_channels": net.latent_channels, "audio_feature_shape": list(net.audio_feature_shape),
            "precond_data_var": net.precond_data_var, "precond_ref_var": net.precond_ref_var,
            "precond_windows": net.precond_windows, "schedule": net.schedule.to_dict(),
            "parts": list(present_parts(net))}


def from_configs(cls, top: dict, parts: dict, attention_backend: str = "auto", sources: Optional[dict] = None):
    """A randomly initialised ``cls`` (AvatarNet) from ``top_config`` / ``part_configs`` dicts."""
    src = sources or {}

    def where(part):
        return src.get(part, part)

    try:
        rc, dc, ac, cc = (parts[p] for p in PARTS)
        ref = ReferenceNet(unet_from_config_dict(rc["unet"], where("reference_net")))
        den = DenoisingNet(unet_from_config_dict(dc["unet"], where("denoising_net")), dc["temporal_heads"],
                           dc["max_frames"], dc.get("cfg_dim"), dc.get("time_cond_dim"),
                           bank_positions=bool(dc.get("bank_positions", False)),
                           reference_concat=bool(dc.get("reference_concat", False)),
                           motion_concat=bool(dc.get("motion_concat", False)),
                           cfg_norm=bool(dc.get("cfg_norm", True)),  # folders from before the option: normed
                           parts=dc.get("parts"))
        identity = None
        if parts.get("identity_proj") is not None:
            from .identity import IdentityProjection

            identity = IdentityProjection(**parts["identity_proj"])
    except (KeyError, TypeError) as e:
        raise FadaError(f"model config is incomplete or malformed ({type(e).__name__}: {e})") from None
    try:
        audio = _audio_projection(ac)
    except TypeError as e:
        raise FadaError(f"{where('audio_proj')}: bad audio projection config ({e})") from None
    try:
        cfg = CFGConditioning(cc["mode"], cc["n_tokens"], cc["dim"], cc.get("time_cond_dim", TIME_COND_DIM))
    except (KeyError, TypeError) as e:
        raise FadaError(f"{where('cfg')}: bad CFG config ({type(e).__name__}: {e})") from None
    try:
        return cls(ref, den, audio, cfg, student=bool(top["student"]), latent_channels=top["latent_channels"],
                   audio_feature_shape=tuple(top["audio_feature_shape"]), attention_backend=attention_backend,
                   precond_data_var=float(top.get("precond_data_var", 0.0)),
                   precond_ref_var=float(top.get("precond_ref_var", 0.0)),
                   precond_windows=int(top.get("precond_windows", 0)), identity_proj=identity,
                   schedule=_schedule(top.get("schedule"), where("top")))
    except (KeyError, TypeError) as e:
        raise FadaError(f"{where('top')}: bad model config ({type(e).__name__}: {e})") from None


def save(net, directory, dtype: Optional[torch.dtype] = None) -> Path:
    """Write the folder described in the module docstring (``dtype``: cast floating tensors, e.g. fp16)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    configs = part_configs(net)
    for part in present_parts(net):
        save_part(directory / part, configs[part], getattr(net, part), dtype)
    (directory / TOP_CONFIG).write_text(json.dumps(top_config(net), indent=2) + "\n")
    return directory


def load(cls, directory, attention_backend: str = "auto", dtype: Optional[torch.dtype] = None):
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFileError(directory, "model folder")
    top_path = directory / TOP_CONFIG
    top = read_json(top_path, "model config")
    if top.get("format") != FORMAT:
        raise FadaError(f"{top_path}: not a FADA model config (format {top.get('format')!r})")
    if int(top.get("version", -1)) > VERSION:
        raise FadaError(f"{top_path}: format version {top.get('version')} is newer than this fada ({VERSION})")
    names = PARTS + tuple(p for p in OPTIONAL_PARTS if p in (top.get("parts") or ()))
    parts = {p: read_config(directory / p, f"{p} config") for p in names}
    sources = {p: directory / p / CONFIG_NAME for p in names}
    sources["top"] = top_path
    model = from_configs(cls, top, parts, attention_backend, sources)
    for p in names:
        load_weights(getattr(model, p), directory / p)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def from_config_file(cls, path):
    """A randomly initialised ``cls`` from a checkpoint's ``net_config.json`` ({"top": ..., "parts": ...})."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
        return from_configs(cls, cfg["top"], cfg["parts"], sources={"top": path})
    except (ValueError, KeyError, TypeError) as e:
        raise FadaError(f"{path}: not a readable net config ({type(e).__name__}: {e})") from None
