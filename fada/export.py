"""Model folders: what ``fada export`` writes and ``fada generate --model DIR`` loads, with no recipe.

Layout (safetensors and JSON only; nothing is ever unpickled)::

    fada_model.json                  format, version, kind (teacher | balanced | fast), variant, the model config
                                     (ModelConfig dict), sampler + steps + num_windows (+ extra_steps), CFG defaults,
                                     cfg_mode, latent channels, audio feature shape, VAE {kind, path | "vae" when
                                     copied}, the audio front end's config, dtype, where it came from
    net/                             AvatarNet.save_pretrained (avatar_config.json + one config.json and
                                     model.safetensors per part), in the exported dtype
    scheduler/scheduler_config.json  PeRFlowScheduler (students), diffusers TCDScheduler (the TCD baseline) or
                                     DDIMScheduler (teacher) config: the model's whole NoiseSchedule (betas,
                                     prediction type, spacing, zero SNR) is read back from it and checked
                                     against the net's own
    vae/                             optional copy of the SD1.5 VAE (config.json + safetensors); otherwise
                                     fada_model.json references the SD folder by absolute path
    audio/                           optional copy of wav2vec2 (config.json + safetensors; --copy-models, the
                                     default); otherwise referenced by absolute path
    taesd/                           optional copy of a TAESD decoder (``--decoder taesd:PATH``; config.json +
                                     safetensors), recorded as ``"decoder": {"kind": "taesd", "path": "taesd"}``
                                     and used to decode by default (``fada.models.taesd``)

An imported Hallo folder also names its face-analysis models (``model.conditions``) by absolute path: they are never
copied (their own licence). The weight-free pixel codec and log-mel front end need no files. Loading checks every
file against the others (latent channels, audio feature shape, CFG mode, tensor shapes) and names the file that is
wrong.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from fada.config.model import ModelConfig, ScheduleConfig
from fada.config.validate import from_dict, to_dict
from fada.diffusion import DISTILLED_GUIDANCE, EXTRA_STEPS, SD15, TEACHER_GUIDANCE, NoiseSchedule
from fada.errors import ConfigError, FadaError, MissingFileError
from fada.utils.io import publish_mode, publish_tree

FORMAT = "fada-model"
VERSION = 1
SPEC_NAME = "fada_model.json"
NET_DIR = "net"
SCHEDULER_DIR = "scheduler"
SCHEDULER_CONFIG = "scheduler_config.json"
AUDIO_DIR = "audio"
VAE_DIR = "vae"
KINDS = ("teacher", "balanced", "fast")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TEACHER_STEPS = 25


def dtype_name(dtype: torch.dtype) -> str:
    for k, v in DTYPES.items():
        if v == dtype:
            return k
    raise ValueError(f"unsupported dtype {dtype}")


def default_guidance(kind: str, cfg_mode: str, guidance=None) -> tuple[float, float]:
    """(cfg_audio, cfg_ref) a model folder starts with: the recipe's ``model.cfg.guidance`` when set, else paper
    §4.1's 6.5/2.5 for multi-CFG sampling (teacher, Balanced) and 6.5/2.0 for Fast models."""
    if guidance is not None:
        return float(guidance[0]), float(guidance[1])
    # a Fast net learned guided targets: told the scales (CFG-distilled), or at the fixed 6.5 / 2.0 it was trained
    # with when it cannot be told them (cfg mode 'none'; fada.training.distill.sample_scales)
    g = DISTILLED_GUIDANCE if kind == "fast" else TEACHER_GUIDANCE
    return float(g.cfg_a), float(g.cfg_r)


def supported_modes(kind: str, cfg_mode: str) -> tuple[str, ...]:
    """Modes a folder of this kind can run: its own. A Fast net's output already holds guidance (its targets were
    the multi-CFG teacher's), so the Balanced mode's multi-CFG passes on top would guide it twice."""
    return (kind,)


@dataclass
class ModelSpec:
    """Everything ``fada_model.json`` and ``scheduler/`` say about a model folder (no weights loaded)."""

    root: Path
    kind: str
    variant: str
    model: ModelConfig
    sampler: str                      # "ddim" (teacher) | "perflow" (students) | "tcd" (the TCD baseline)
    steps: int
    num_windows: int                  # PeRFlow windows K (0 for the DDIM teacher)
    cfg_audio: float
    cfg_ref: float
    cfg_mode: str
    latent_channels: int
    audio_feature_shape: tuple[int, int, int]
    dtype: str
    vae_path: Optional[Path]          # SD root holding vae/ (the model folder itself when copied)
    schedule: NoiseSchedule = SD15        # ᾱ and the net's parametrisation (scheduler/scheduler_config.json)
    source: dict = field(default_factory=dict)
    extra_steps: str = "early"        # PeRFlow: windows that get the steps mod K ('early' | 'late', step_times)
    tcd: dict = field(default_factory=dict)  # TCD: {"gamma", "original_steps"}
    decoder: dict = field(default_factory=dict)  # {} = decode with the codec; {"kind": "taesd", "path": abs. folder}

    @property
    def modes(self) -> tuple[str, ...]:
        return supported_modes(self.kind, self.cfg_mode)

    @property
    def spec_file(self) -> Path:
        return self.root / SPEC_NAME


def spec_for(net, model_cfg: ModelConfig, kind: str, steps: Optional[int] = None, num_windows: int = 4,
             root=None, extra_steps: str = "early", tcd: Optional[dict] = None) -> ModelSpec:
    """The ModelSpec a folder exported from ``net`` would have, without writing it (benchmarks, the demo, eval
    build pipelines in memory with it). ``tcd`` ({"gamma", "original_steps"}) describes a TCD student (kind
    balanced), sampled with TCDScheduler."""
    if kind not in KINDS:
        raise FadaError(f"model kind {kind!r} is not one of {', '.join(KINDS)}")
    cfg_a, cfg_r = default_guidance(kind, net.cfg_mode, model_cfg.cfg.guidance)
    p = next(net.parameters())
    vae_path = Path(model_cfg.vae.path) if model_cfg.vae.kind == "sd" and model_cfg.vae.path else None
    if tcd and kind != "balanced":
        raise FadaError("a TCD student samples with multi-CFG: describe it as a balanced model")
    tcd = {"gamma": float(tcd["gamma"]), "original_steps": int(tcd["original_steps"])} if tcd else {}
    return ModelSpec(root=Path(root) if root else Path("<memory>"), kind=kind, variant="tcd" if tcd else kind,
                     model=model_cfg, sampler="ddim" if kind == "teacher" else ("tcd" if tcd else "perflow"),
                     steps=int(steps or (TEACHER_STEPS if kind == "teacher" else 6)),
                     num_windows=0 if kind == "teacher" or tcd else int(num_windows), cfg_audio=cfg_a, cfg_ref=cfg_r,
                     cfg_mode=net.cfg_mode, latent_channels=net.latent_channels,
                     audio_feature_shape=tuple(net.audio_feature_shape), dtype=dtype_name(p.dtype),
                     vae_path=vae_path, schedule=net.schedule,
                     extra_steps="early" if kind == "teacher" or tcd else extra_steps, tcd=tcd)


# ---------------------------------------------------------------------------------------------------------------
# writing


def _scheduler_config(kind: str, schedule: NoiseSchedule, num_windows: int, extra_steps: str = "early",
                      tcd: Optional[dict] = None) -> tuple[object, str]:
    """The diffusers scheduler a folder's sampler is written as; each carries the net's whole ``schedule``."""
    if tcd:
        from fada.diffusion.tcd import tcd_scheduler

        return tcd_scheduler(schedule, int(tcd["original_steps"])), "tcd"
    if kind == "teacher":
        from diffusers import DDIMScheduler

        return DDIMScheduler(**schedule.diffusers_config()), "ddim"
    from fada.diffusion import PeRFlowScheduler

    return PeRFlowScheduler.for_schedule(schedule, num_windows, extra_steps), "perflow"


def _copy_model_folder(src: Path, dest: Path) -> bool:
    """Copy a model folder's configs and safetensors weights (nothing pickled) to ``dest``; False when it has no
    config.json or no safetensors weights."""
    weights = sorted(src.glob("*.safetensors")) + sorted(src.glob("*.safetensors.index.json"))
    if not (src / "config.json").is_file() or not weights:
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for f in [src / "config.json", *sorted(src.glob("preprocessor_config.json")), *weights]:
        shutil.copy2(f, dest / f.name)
    return True


def write_model_folder(out, net, model_cfg: ModelConfig, *, kind: str, variant: Optional[str] = None,
                       steps: Optional[int] = None, num_windows: int = 4, extra_steps: str = "early",
                       dtype: str = "fp16",
                       copy_vae: bool = True, copy_audio: bool = True, source: Optional[dict] = None,
                       log=print, tcd: Optional[dict] = None, vae_folder=None, decoder_folder=None) -> Path:
    """Write a model folder for ``net`` (an AvatarNet) atomically (assembled beside ``out``, then renamed).

    kind: teacher | balanced | fast. steps: default sampler steps (teacher 25, students the recipe's 6);
    extra_steps: which PeRFlow windows get the steps mod num_windows (``step_times``).
    An existing ``out`` is replaced only when it is itself a model folder (or empty). ``vae_folder``: the SD VAE's
    own folder (config.json + safetensors) when it does not sit in ``model.vae.path``/vae (an imported model's
    ``sd-vae-ft-mse``); it is always copied. ``decoder_folder``: a TAESD folder copied into ``taesd/`` and used
    to decode by default; checked against the SD VAE's latent channels and downsampling.
    """
    if kind not in KINDS:
        raise FadaError(f"model kind {kind!r} is not one of {', '.join(KINDS)}")
    if dtype not in DTYPES:
        raise FadaError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if kind == "teacher" and net.student:
        raise FadaError("a teacher model folder needs a teacher net (this one is a student)")
    if kind != "teacher" and not net.student:
        raise FadaError(f"a {kind} model folder needs a student net (this one is a teacher)")
    out = Path(out).expanduser()
    if out.exists():
        if not out.is_dir():
            raise FadaError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / SPEC_NAME).is_file():
            raise FadaError(f"{out}: exists and is not a model folder; choose another --out")
    steps = int(steps or (TEACHER_STEPS if kind == "teacher" else 6))
    if tcd and kind != "balanced":
        raise FadaError("a TCD student samples with multi-CFG: export it as a balanced model")
    if kind != "teacher" and not tcd and steps < num_windows:
        raise FadaError(f"{steps} steps < {num_windows} PeRFlow windows: PeRFlow needs a step per window")
    if extra_steps not in EXTRA_STEPS:
        raise FadaError(f"extra steps {extra_steps!r}: choose one of {', '.join(EXTRA_STEPS)}")
    cfg_a, cfg_r = default_guidance(kind, net.cfg_mode, model_cfg.cfg.guidance)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        net.save_pretrained(tmp / NET_DIR, dtype=DTYPES[dtype])
        sched, sampler = _scheduler_config(kind, net.schedule, num_windows, extra_steps, tcd)
        sched.save_pretrained(str(tmp / SCHEDULER_DIR))

        mdict = to_dict(copy.deepcopy(model_cfg))
        mdict["unet"]["pretrained"] = None  # the weights are in net/; the SD UNet folder is not needed any more
        vae_entry: dict = {"kind": model_cfg.vae.kind}
        if model_cfg.vae.kind == "sd" and vae_folder is not None:
            if not _copy_model_folder(Path(vae_folder), tmp / VAE_DIR):
                raise MissingFileError(Path(vae_folder) / "config.json", "SD VAE config",
                                       "with its safetensors weights beside it")
            vae_entry["path"] = VAE_DIR
            vae_entry["scaling_factor"] = float(model_cfg.vae.scaling_factor)
            log(f"copied the SD VAE from {vae_folder} into {out / VAE_DIR}")
        elif model_cfg.vae.kind == "sd":
            sd_root = Path(model_cfg.vae.path).expanduser().resolve()
            if copy_vae and _copy_model_folder(sd_root / "vae", tmp / VAE_DIR):
                vae_entry["path"] = VAE_DIR
                log(f"copied the SD VAE from {sd_root / 'vae'} into {out / VAE_DIR}")
            else:
                vae_entry["path"] = str(sd_root)
                log(f"the SD VAE is referenced by path: {sd_root} (not copied)")
            vae_entry["scaling_factor"] = float(model_cfg.vae.scaling_factor)
        else:
            vae_entry["factor"] = int(model_cfg.vae.factor)
        mdict["vae"]["path"] = None
        decoder_entry = {}
        if decoder_folder is not None:
            decoder_entry = _copy_decoder(Path(decoder_folder), tmp, net, model_cfg, vae_entry)
            log(f"copied the TAESD decoder from {decoder_folder} into {out / decoder_entry['path']}")
        audio = to_dict(model_cfg.audio)
        if model_cfg.audio.kind == "wav2vec2":
            src = Path(model_cfg.audio.path).expanduser().resolve()
            if copy_audio and _copy_model_folder(src, tmp / AUDIO_DIR):  # the folder moves between machines whole
                audio["path"] = AUDIO_DIR
                log(f"copied wav2vec2 from {src} into {out / AUDIO_DIR}")
            else:
                audio["path"] = str(src)
                log(f"wav2vec2 is referenced by path: {src} (not copied)")
        mdict["audio"]["path"] = None
        spec = {
            "format": FORMAT, "version": VERSION, "kind": kind, "variant": variant or kind,
            "model": mdict,
            "sampler": {"name": sampler, "steps": steps,
                        "num_windows": 0 if kind == "teacher" or tcd else int(num_windows),
                        **({} if kind == "teacher" or tcd else {"extra_steps": extra_steps}),
                        **({"gamma": float(tcd["gamma"]), "original_steps": int(tcd["original_steps"])}
                           if tcd else {})},
            "guidance": {"cfg_audio": cfg_a, "cfg_ref": cfg_r},
            "cfg_mode": net.cfg_mode,
            "latent_channels": int(net.latent_channels),
            "audio_feature_shape": list(net.audio_feature_shape),
            "vae": vae_entry,
            "audio": audio,
            **({"decoder": decoder_entry} if decoder_entry else {}),
            "dtype": dtype,
            "source": source or {},
        }
        (tmp / SPEC_NAME).write_text(json.dumps(spec, indent=2) + "\n")
        publish_tree(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            publish_mode(old, folder=True)  # a leftover (rmtree failed) is as readable as the folder it held
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _copy_decoder(src: Path, tmp: Path, net, model_cfg: ModelConfig, vae_entry: dict) -> dict:
    """Check a TAESD folder against the SD VAE the model folder names, copy it into ``taesd/``; its spec entry."""
    from fada.models.loading import read_json
    from fada.models.taesd import TAESD_DIR, WEIGHTS, check_geometry

    src = src.expanduser()
    if model_cfg.vae.kind != "sd":
        raise FadaError(f"--decoder taesd: TAESD decodes SD VAE latents; this model uses the {model_cfg.vae.kind} "
                        "codec")
    p = vae_entry["path"]
    vae_cfg_file = (tmp / p if not os.path.isabs(p) else Path(p) / VAE_DIR) / "config.json"
    vae_cfg = read_json(vae_cfg_file, "SD VAE config")
    downsample = 2 ** (len(vae_cfg.get("block_out_channels", [])) - 1)  # as SDVAE computes it
    check_geometry(src, net.latent_channels, downsample, f"sd-vae(x{downsample}, {net.latent_channels}ch)")
    if not (src / WEIGHTS).is_file() or not _copy_model_folder(src, tmp / TAESD_DIR):
        raise MissingFileError(src / WEIGHTS, "TAESD decoder weights", "beside its config.json")
    return {"kind": "taesd", "path": TAESD_DIR}


# ---------------------------------------------------------------------------------------------------------------
# reading


def _need(data: dict, key: str, types, where: Path):
    if key not in data:
        raise FadaError(f"{where}: missing key {key!r}")
    v = data[key]
    if not isinstance(v, types) or (isinstance(v, bool) and types is int):
        raise FadaError(f"{where}: {key!r} has the wrong type ({type(v).__name__})")
    return v


def read_kind(root) -> tuple[str, str]:
    """(kind, cfg_mode) from ``fada_model.json`` alone (no other file, no weights): enough to check a requested mode
    before a model loads. A folder without the file gets `read_spec`'s error, which says what it is instead."""
    from fada.models.loading import read_json

    root = Path(root).expanduser()
    spec_file = root / SPEC_NAME
    if not spec_file.is_file():
        read_spec(root)
    data = read_json(spec_file, "model spec")
    kind = _need(data, "kind", str, spec_file)
    if kind not in KINDS:
        raise FadaError(f"{spec_file}: kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind, _need(data, "cfg_mode", str, spec_file)


def read_spec(root) -> ModelSpec:
    """Read and cross-check ``fada_model.json``, ``scheduler/`` and ``net/avatar_config.json`` (no weights)."""
    from fada.models.loading import read_json

    root = Path(root).expanduser()
    if not root.exists():
        raise MissingFileError(root, "model folder")
    spec_file = root / SPEC_NAME
    if not spec_file.is_file():
        if (root / "state.json").is_file() or any(root.glob("step-*/state.json")):
            raise FadaError(f"{root} is a training checkpoint, not a model folder; "
                            f"export it first: fada export {root} --out MODEL_DIR")
        raise MissingFileError(spec_file, "model spec", "not a model folder written by `fada export`")
    data = read_json(spec_file, "model spec")
    if data.get("format") != FORMAT:
        raise FadaError(f"{spec_file}: not a FADA model folder spec (format {data.get('format')!r})")
    if int(data.get("version", -1)) > VERSION:
        raise FadaError(f"{spec_file}: format version {data.get('version')} is newer than this fada ({VERSION})")
    kind = _need(data, "kind", str, spec_file)
    if kind not in KINDS:
        raise FadaError(f"{spec_file}: kind {kind!r} is not one of {', '.join(KINDS)}")
    sampler = _need(data, "sampler", dict, spec_file)
    guidance = _need(data, "guidance", dict, spec_file)
    vae = _need(data, "vae", dict, spec_file)
    audio = _need(data, "audio", dict, spec_file)
    mdict = copy.deepcopy(_need(data, "model", dict, spec_file))

    # paths: the copied VAE lives in the folder; referenced ones are absolute
    vae_path = None
    if vae.get("kind") == "sd":
        p = vae.get("path")
        if not isinstance(p, str) or not p:
            raise FadaError(f"{spec_file}: vae.path is missing for an SD VAE")
        vdir = root / p if not os.path.isabs(p) else Path(p) / "vae"
        if not (vdir / "config.json").is_file():
            raise MissingFileError(vdir / "config.json", "SD VAE config",
                                   f"named by {spec_file.name}; re-export with the SD folder present")
        vae_path = vdir.parent if not os.path.isabs(p) else Path(p)
        if not os.path.isabs(p) and vdir.name != "vae":
            raise FadaError(f"{spec_file}: a copied VAE must live in the 'vae' subfolder, got {p!r}")
    mdict.setdefault("vae", {})
    mdict["vae"].update({k: v for k, v in vae.items() if k != "path"})
    mdict["vae"]["path"] = str(vae_path) if vae_path else None
    mdict["audio"] = dict(audio)
    if audio.get("kind") == "wav2vec2" and isinstance(audio.get("path"), str) and not os.path.isabs(audio["path"]):
        mdict["audio"]["path"] = str(root / audio["path"])  # carried in the folder
    mdict.setdefault("unet", {})["pretrained"] = None
    decoder = _read_decoder(data.get("decoder"), root, spec_file)
    try:
        model_cfg = from_dict(ModelConfig, mdict, str(spec_file))
    except ConfigError as e:
        raise FadaError(f"{spec_file}: bad model config: {'; '.join(e.problems)}") from None

    name = sampler.get("name")
    want = "ddim" if kind == "teacher" else ("tcd" if name == "tcd" and kind == "balanced" else "perflow")
    if name != want:
        raise FadaError(f"{spec_file}: a {kind} model samples with {want!r}, the spec says {name!r}")
    steps = sampler.get("steps")
    windows = sampler.get("num_windows", 0)
    if not isinstance(steps, int) or steps < 1 or not isinstance(windows, int) or windows < 0:
        raise FadaError(f"{spec_file}: sampler.steps / num_windows must be positive integers")
    tcd = {}
    if name == "tcd":
        try:
            tcd = {"gamma": float(sampler["gamma"]), "original_steps": int(sampler["original_steps"])}
        except (KeyError, TypeError, ValueError):
            raise FadaError(f"{spec_file}: a TCD sampler needs numeric gamma and original_steps") from None
    elif kind != "teacher" and windows < 1:
        raise FadaError(f"{spec_file}: a {kind} model needs sampler.num_windows >= 1")
    extra = sampler.get("extra_steps", "early")  # folders written before the option existed: the paper's placement
    if extra not in EXTRA_STEPS:
        raise FadaError(f"{spec_file}: sampler.extra_steps {extra!r} is not one of {', '.join(EXTRA_STEPS)}")

    sched_file = root / SCHEDULER_DIR / SCHEDULER_CONFIG
    sched = read_json(sched_file, "scheduler config")
    try:
        schedule = NoiseSchedule.from_config(sched)
    except ValueError as e:
        raise FadaError(f"{sched_file}: bad noise schedule ({e})") from None
    if kind != "teacher" and not tcd and int(sched.get("num_windows", -1)) != windows:
        raise FadaError(f"{sched_file}: num_windows {sched.get('num_windows')} != {windows} in {spec_file.name}")
    if kind != "teacher" and not tcd and sched.get("extra_steps", "early") != extra:
        raise FadaError(f"{sched_file}: extra_steps {sched.get('extra_steps')!r} != {extra!r} in {spec_file.name}")

    lc = _need(data, "latent_channels", int, spec_file)
    afs = tuple(_need(data, "audio_feature_shape", list, spec_file))
    cfg_mode = _need(data, "cfg_mode", str, spec_file)
    net_top_file = root / NET_DIR / "avatar_config.json"
    net_top = read_json(net_top_file, "net config")
    for key, mine in (("latent_channels", lc), ("audio_feature_shape", list(afs)), ("cfg_mode", cfg_mode),
                      ("student", kind != "teacher")):
        if net_top.get(key) != mine:
            raise FadaError(f"{net_top_file}: {key} is {net_top.get(key)!r} but {spec_file.name} says {mine!r}")
    try:
        net_schedule = NoiseSchedule.from_config(net_top.get("schedule") or {})  # older nets: SD1.5's
    except ValueError as e:
        raise FadaError(f"{net_top_file}: bad schedule ({e})") from None
    if net_schedule != schedule:
        diff = [k for k, v in schedule.to_dict().items() if net_schedule.to_dict()[k] != v]
        raise FadaError(f"{sched_file}: the noise schedule differs from the net's in {net_top_file.name} "
                        f"({', '.join(diff)}): a net samples only in the parametrisation it was trained in")
    try:
        cfg_a, cfg_r = float(guidance["cfg_audio"]), float(guidance["cfg_ref"])
    except (KeyError, TypeError, ValueError):
        raise FadaError(f"{spec_file}: guidance needs numeric cfg_audio and cfg_ref") from None
    dtype = data.get("dtype", "fp32")
    if dtype not in DTYPES:
        raise FadaError(f"{spec_file}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    model_cfg = dataclasses.replace(model_cfg, schedule=ScheduleConfig(**schedule.to_dict()))  # one truth: scheduler/
    return ModelSpec(root=root, kind=kind, variant=str(data.get("variant", kind)), model=model_cfg, sampler=name,
                     steps=steps, num_windows=windows, cfg_audio=cfg_a, cfg_ref=cfg_r, cfg_mode=cfg_mode,
                     latent_channels=lc, audio_feature_shape=tuple(int(x) for x in afs), dtype=dtype,
                     vae_path=vae_path, schedule=schedule, source=dict(data.get("source") or {}),
                     extra_steps=extra, tcd=tcd, decoder=decoder)


def _read_decoder(entry, root: Path, spec_file: Path) -> dict:
    """The folder's own decoder (``{}``: the codec); a TAESD copy must be in the folder."""
    if not entry:
        return {}
    if not isinstance(entry, dict) or entry.get("kind") != "taesd" or not isinstance(entry.get("path"), str) \
            or os.path.isabs(entry["path"]) or not entry["path"]:
        raise FadaError(f"{spec_file}: decoder must be {{\"kind\": \"taesd\", \"path\": \"taesd\"}}, got {entry!r}")
    folder = root / entry["path"]
    if not (folder / "config.json").is_file():
        raise MissingFileError(folder / "config.json", "TAESD decoder config", f"named by {spec_file.name}")
    return {"kind": "taesd", "path": str(folder)}


def load_net(spec: ModelSpec, device=None, dtype: Optional[torch.dtype] = None):
    """The AvatarNet of a model folder (strict: missing/extra keys or wrong shapes name the file)."""
    from fada.models.avatar import AvatarNet

    net = AvatarNet.from_pretrained(spec.root / NET_DIR, attention_backend=spec.model.attention_backend)
    if net.cfg_mode != spec.cfg_mode:
        raise FadaError(f"{spec.root / NET_DIR}: cfg mode {net.cfg_mode!r} != {spec.cfg_mode!r} in {SPEC_NAME}")
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_codec(spec: ModelSpec, device=None, dtype: Optional[torch.dtype] = None):
    """The image codec a model folder names; its latent channels must match the net's."""
    from fada.models.vae import build_vae

    codec = build_vae(spec.model.vae, device=device, dtype=dtype)
    if codec.latent_channels != spec.latent_channels:
        where = (spec.vae_path / "vae" / "config.json") if spec.vae_path else spec.spec_file
        raise FadaError(f"{where}: the codec gives {codec.latent_channels} latent channels, the net takes "
                        f"{spec.latent_channels}")
    if spec.model.resolution % codec.downsample:
        raise FadaError(f"{spec.spec_file}: resolution {spec.model.resolution} is not a multiple of the codec's "
                        f"downsampling {codec.downsample}")
    return codec


def load_frontend(spec: ModelSpec, device=None):
    """The audio front end a model folder names; its feature shape must match the net's audio projection."""
    from fada.models.audio import build_audio_frontend

    fe = build_audio_frontend(spec.model.audio, device=device or "cpu")
    if tuple(fe.feature_shape) != tuple(spec.audio_feature_shape):
        where = Path(spec.model.audio.path) / "config.json" if spec.model.audio.kind == "wav2vec2" \
            else spec.spec_file
        raise FadaError(f"{where}: the audio front end gives features {tuple(fe.feature_shape)}, the net expects "
                        f"{tuple(spec.audio_feature_shape)}")
    return fe
