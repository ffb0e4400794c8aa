"""``fada export``: a training checkpoint -> a self-contained model folder (see ``fada.export``) for ``generate``.

The checkpoint's ``recipe.yaml`` says what it is: ``stage: teacher`` -> a teacher folder (DDIM 25 steps,
multi-CFG); ``stage: distill`` with ``distill.variant`` balanced | fast | rflow -> a student folder (PeRFlow with
``distill.inference_steps`` steps over ``distill.num_windows`` windows, extra steps where ``distill.extra_steps``
puts them; rflow students are balanced ones with one window). ``state.json``'s ``kind``, when a stage wrote one,
takes precedence. Only the recipe's ``model:`` section is validated (the training data need not exist any more).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import yaml

from fada.errors import ConfigError, FadaError, MissingFileError

KNOWN_KINDS = ("teacher", "balanced", "fast", "rflow", "tcd")


# what a checkpoint argument should be, with `fada demo`'s run folders as the example
CHECKPOINT_HINT = ("give the train.output_dir of a `fada train-teacher` / `fada distill` run or one of its "
                   "step-XXXXXXX/ folders, e.g. fada-demo/runs/teacher or fada-demo/runs/fast")


def resolve_checkpoint(path) -> Path:
    """A ``step-XXXXXXX/`` folder, or a run folder (its latest checkpoint)."""
    from fada.training.checkpoint import latest_checkpoint

    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(p, "checkpoint", CHECKPOINT_HINT)
    if not p.is_dir():
        raise FadaError(f"{p}: expected a checkpoint folder (step-XXXXXXX/) or a run folder")
    if (p / "state.json").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        if (p / "fada_model.json").is_file():
            raise FadaError(f"{p} is already an exported model folder; pass it to `fada generate --model`")
        raise FadaError(f"{p}: neither a checkpoint (no state.json) nor a run folder with step-XXXXXXX/ checkpoints; "
                        f"{CHECKPOINT_HINT}")
    return latest


def _weight_shapes(model_file: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    if not model_file.is_file():
        raise MissingFileError(model_file, "checkpoint weights")
    try:
        with safe_open(str(model_file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FadaError(f"{model_file}: not a readable safetensors file ({msg})") from None


def _decoder_folder(decoder: Optional[str]) -> Optional[Path]:
    """``--decoder`` at export: "sd" (or None) keeps the VAE; "taesd:PATH" names the folder to copy in."""
    from fada.models.taesd import parse_decoder

    if decoder is None:
        return None
    kind, path = parse_decoder(decoder)
    if kind == "taesd" and path is None:
        raise FadaError("--decoder taesd: name the TAESD folder to copy into the model folder: --decoder taesd:PATH")
    return path


def read_checkpoint_meta(ckpt: Path) -> dict:
    """What the checkpoint is: kind, variant, steps, windows, ModelConfig, latent channels, audio feature shape."""
    from fada.config.model import ModelConfig
    from fada.config.schema import DistillConfig
    from fada.config.validate import from_dict
    from fada.diffusion import EXTRA_STEPS

    recipe_file, state_file, model_file = ckpt / "recipe.yaml", ckpt / "state.json", ckpt / "model.safetensors"
    if not recipe_file.is_file():
        raise MissingFileError(recipe_file, "checkpoint recipe", "export needs the recipe the run was started with")
    try:
        recipe = yaml.safe_load(recipe_file.read_text())
    except yaml.YAMLError as e:
        raise FadaError(f"{recipe_file}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("model"), dict):
        raise FadaError(f"{recipe_file}: no 'model:' section")
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as e:
        raise FadaError(f"{state_file}: not readable JSON ({e})") from None
    stage = recipe.get("stage")
    if stage not in ("teacher", "distill"):
        raise FadaError(f"{recipe_file}: stage {stage!r} is not a model-training stage (teacher or distill)")
    try:
        model_cfg = from_dict(ModelConfig, recipe["model"], str(recipe_file))
    except ConfigError as e:
        raise FadaError(f"{recipe_file}: model: {'; '.join(e.problems)}") from None

    d = DistillConfig()
    dist = recipe.get("distill") or {}
    variant = str(dist.get("variant", d.variant)) if stage == "distill" else "teacher"
    kind = state.get("kind") if state.get("kind") in KNOWN_KINDS else variant
    if kind not in KNOWN_KINDS:
        raise FadaError(f"{recipe_file}: distill.variant {variant!r} is not one of balanced, fast, rflow, tcd")
    try:
        steps = int(dist.get("inference_steps", d.inference_steps))
        windows = int(dist.get("num_windows", d.num_windows))
    except (TypeError, ValueError):
        raise FadaError(f"{recipe_file}: distill.inference_steps / num_windows must be integers") from None
    extra = str(dist.get("extra_steps", d.extra_steps))
    if extra not in EXTRA_STEPS:
        raise FadaError(f"{recipe_file}: distill.extra_steps {extra!r} is not one of {', '.join(EXTRA_STEPS)}")
    if kind == "rflow":  # distilled like balanced (guidance-1 targets): sampled with multi-CFG, one window
        windows = 1
        if model_cfg.cfg.mode != "none":
            raise FadaError(f"{recipe_file}: an rflow student takes no CFG conditioning (cfg mode "
                            f"{model_cfg.cfg.mode!r}); it was trained by a fada version that guided it twice")
        kind = "balanced"
    tcd = None
    if kind == "tcd":  # distilled like balanced: sampled with TCDScheduler and multi-CFG
        if model_cfg.cfg.mode != "none":
            raise FadaError(f"{recipe_file}: a tcd student takes no CFG conditioning (cfg mode {model_cfg.cfg.mode!r})")
        tcd = {"gamma": float(dist.get("tcd_gamma", d.tcd_gamma)),
               "original_steps": int(dist.get("tcd_original_steps", d.tcd_original_steps))}
        kind, windows = "balanced", 0
    if kind == "teacher":
        steps, windows, extra = 25, 0, "early"

    net_config = ckpt / "net_config.json"
    if net_config.is_file():  # the net's own configs say it (any audio projection kind)
        try:
            top = json.loads(net_config.read_text())["top"]
            lc, feature_shape = int(top["latent_channels"]), tuple(int(x) for x in top["audio_feature_shape"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FadaError(f"{net_config}: not a readable net config ({type(e).__name__}: {e})") from None
    else:  # checkpoints from before they carried their configs: read it off fada's own audio projection
        shapes = _weight_shapes(model_file)
        try:
            layers = shapes["audio_proj.layer_logits"][0]
            in_dim = shapes["audio_proj.mlp.0.weight"][1]
            lc = shapes["reference_net.unet.conv_in.weight"][1]  # the denoising net may take reference channels too
        except KeyError as e:
            raise FadaError(f"{model_file}: not an AvatarNet state dict (no {e.args[0]})") from None
        win = 2 * model_cfg.audio.window + 1
        if in_dim % win:
            raise FadaError(f"{model_file}: audio projection input {in_dim} is not a multiple of the window {win} "
                            f"(model.audio.window={model_cfg.audio.window} in {recipe_file.name})")
        feature_shape = (win, int(layers), in_dim // win)
    trainable = list(dist.get("trainable", d.trainable)) if stage == "distill" else []
    lora = {"rank": int(dist.get("lora_rank", d.lora_rank)), "alpha": dist.get("lora_alpha", d.lora_alpha)} \
        if "lora" in trainable else None
    return {"kind": kind, "variant": variant, "steps": steps, "num_windows": windows, "extra_steps": extra,
            "lora": lora, "tcd": tcd,
            "model": model_cfg,
            "latent_channels": int(lc), "audio_feature_shape": feature_shape,
            "step": state.get("step")}


def run(checkpoint, out, dtype: str = "fp16", ema: bool = True, copy_vae: bool = True,
        copy_audio: bool = True, decoder: Optional[str] = None) -> Path:
    """Export ``checkpoint`` (a step folder or run folder) to the model folder ``out``; returns ``out``.
    ``decoder``: "taesd:PATH" copies that TAESD folder in as the folder's default decoder; "sd"/None: the VAE."""
    from fada.export import DTYPES, write_model_folder
    from fada.models.avatar import build_avatar_net
    from fada.training.checkpoint import load_model_weights

    if dtype not in DTYPES:
        raise FadaError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    decoder_folder = _decoder_folder(decoder)
    ckpt = resolve_checkpoint(checkpoint)
    meta = read_checkpoint_meta(ckpt)
    model_cfg = meta["model"]
    kind = meta["kind"]
    cfg_file = ckpt / "net_config.json"
    if cfg_file.is_file():  # the net's own configs: no SD1.5 folder needed
        from fada.models.avatar import AvatarNet

        net = AvatarNet.from_config_file(cfg_file)
        if net.student != (kind != "teacher"):
            raise FadaError(f"{cfg_file}: a {'student' if net.student else 'teacher'} net, but the recipe says {kind}")
    else:
        net = build_avatar_net(model_cfg, student=kind != "teacher", latent_channels=meta["latent_channels"],
                               audio_feature_shape=meta["audio_feature_shape"])
    if meta["lora"]:  # the checkpoint holds adapters: load them into the same structure, then merge
        from fada.training.trainable import add_lora

        add_lora(net, meta["lora"]["rank"], meta["lora"]["alpha"])
    has_ema = (ckpt / "ema.safetensors").is_file()
    load_model_weights(ckpt, net, use_ema=ema)
    if meta["lora"]:
        from fada.training.trainable import merge_lora

        merge_lora(net)
    if ema and not has_ema:
        print(f"note: {ckpt} has no EMA weights; exporting the raw ones")
    source = {"checkpoint": str(ckpt.resolve()), "step": meta["step"], "weights": "ema" if ema and has_ema else "raw"}
    out = write_model_folder(out, net.eval(), model_cfg, kind=kind, variant=meta["variant"], steps=meta["steps"],
                             num_windows=meta["num_windows"], extra_steps=meta["extra_steps"], dtype=dtype,
                             copy_vae=copy_vae, copy_audio=copy_audio, source=source, tcd=meta["tcd"],
                             decoder_folder=decoder_folder)
    n = sum(p.numel() for p in net.parameters())
    sampler = "DDIM" if kind == "teacher" else "TCD" if meta["tcd"] else f"PeRFlow, {meta['num_windows']} windows"
    if kind != "teacher" and meta["extra_steps"] != "early":
        sampler += f", extra steps {meta['extra_steps']}"
    print(f"exported {ckpt} ({kind} model, {n / 1e6:.1f}M parameters, {source['weights']} weights, {dtype}) to "
          f"{out}: {meta['steps']} steps {sampler} by default")
    return out
