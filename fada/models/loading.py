"""Files of the model package: SD1.5 UNet folders (diffusers layout) and our own part folders.

SD1.5: ``load_sd_unet(folder)`` reads ``<folder>/unet/config.json`` and ``diffusion_pytorch_model.safetensors``
(or its fp16 variant, or a sharded ``.safetensors.index.json``) -- local files only, safetensors only (pickled
``.bin`` weights are refused), strict key/shape checks. ``folder`` may also be the ``unet/`` folder itself.

Parts: ``save_part(dir, config, module)`` writes ``dir/config.json`` + ``dir/model.safetensors``;
``read_config`` / ``load_weights`` read them back with strict checks. Every problem is a one-line FadaError (or
MissingFileError) naming the file.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from fada.errors import FadaError, MissingFileError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SD_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
)


# ---------------------------------------------------------------------------------------------------------------
# generic checked reading


def read_json(path, what: str = "config") -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, what)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FadaError(f"{path}: not a readable JSON {what} ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise FadaError(f"{path}: {what} must be a JSON object")
    return data


def weights_fingerprint(folder) -> list:
    """What identifies the weights in ``folder`` without reading them all: for each ``*.safetensors`` file its
    name, size and a hash of its first and last MiB (header and the first and last tensors). A copied file keeps
    its fingerprint; a fine-tune of the same architecture does not."""
    import hashlib

    out = []
    for f in sorted(Path(folder).glob("*.safetensors")):
        size = f.stat().st_size
        h = hashlib.sha1()
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(size - (1 << 20))
                h.update(fh.read(1 << 20))
        out.append([f.name, size, h.hexdigest()])
    return out


@contextlib.contextmanager
def quiet_hf_loading():
    """Silence transformers' and diffusers' load-time reports (the "UNEXPECTED lm_head" table of every CTC
    wav2vec2 checkpoint, dtype notes): fada checks the load itself and names real problems in one line."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    levels = tlog.get_verbosity(), dlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled(), dlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()  # "Loading weights" bars for a load that takes a second
    dlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        tlog.set_verbosity(levels[0])
        dlog.set_verbosity(levels[1])
        if bars[0]:
            tlog.enable_progress_bar()
        if bars[1]:
            dlog.enable_progress_bar()


def config_identity(config) -> dict:
    """A model config without the fields that name where or by which library version it was saved."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_") and k != "transformers_version"}


def read_safetensors(path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "weights file")
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError on damaged files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FadaError(f"{path}: not a readable safetensors file ({msg})") from None


def _examples(keys, n: int = 3) -> str:
    keys = sorted(keys)
    more = f", … (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_checked(module: nn.Module, state: dict[str, Tensor], source, key_sources: Optional[dict] = None):
    """Strict ``load_state_dict``: every key present, none extra, every shape equal -- else a FadaError naming
    ``source`` (or, for a shape error, the file ``key_sources[key]`` it came from)."""
    own = module.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_examples(unexpected)})")
        raise FadaError(f"{source}: weights do not match the model: " + "; ".join(parts))
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            src = (key_sources or {}).get(k, source)
            raise FadaError(f"{src}: {k} has shape {tuple(state[k].shape)}, the model expects {tuple(v.shape)}")
        if state[k].is_floating_point() != v.is_floating_point():
            src = (key_sources or {}).get(k, source)
            raise FadaError(f"{src}: {k} has dtype {state[k].dtype}, the model expects {v.dtype}")
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------------------------
# part folders (config.json + model.safetensors)


def save_part(directory, config: dict, module: Optional[nn.Module], dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``directory/config.json`` and (when ``module`` has tensors) ``directory/model.safetensors``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {} if module is None else module.state_dict()
    out = {}
    for k, v in state.items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.cpu().contiguous().clone()
    save_file(out, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def read_config(directory, what: str = "config") -> dict:
    return read_json(Path(directory) / CONFIG_NAME, what)


def load_weights(module: nn.Module, directory) -> None:
    path = Path(directory) / WEIGHTS_NAME
    load_state_checked(module, read_safetensors(path), path)


# ---------------------------------------------------------------------------------------------------------------
# SD1.5 UNet folders


def find_unet_dir(path) -> Path:
    """``<folder>/unet`` of a diffusers SD folder, or ``path`` itself when it is a UNet folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(p, "Stable Diffusion 1.5 folder", "unet.pretrained")
    if (p / "unet" / CONFIG_NAME).is_file():
        return p / "unet"
    if (p / CONFIG_NAME).is_file():
        cfg = read_json(p / CONFIG_NAME, "UNet config")
        if cfg.get("_class_name") == "UNet2DConditionModel":
            return p
    raise MissingFileError(p / "unet" / CONFIG_NAME, "UNet config",
                           "expected the diffusers layout <folder>/unet/config.json")


def _sd_weight_state(unet_dir: Path) -> tuple[dict[str, Tensor], str, dict]:
    for name in SD_WEIGHT_NAMES:
        f = unet_dir / name
        if not f.is_file():
            continue
        if name.endswith(".index.json"):
            index = read_json(f, "weight index")
            wm = index.get("weight_map")
            if not isinstance(wm, dict):
                raise FadaError(f"{f}: no 'weight_map' in the weight index")
            state, sources = {}, {}
            for shard in sorted(set(wm.values())):
                shard_path = unet_dir / shard
                part = read_safetensors(shard_path)
                state.update(part)
                sources.update({k: shard_path for k in part})
            return state, str(f), sources
        return read_safetensors(f), str(f), {}
    for pickled in ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"):
        if (unet_dir / pickled).is_file():
            raise FadaError(f"{unet_dir / pickled}: pickled weights are never loaded; "
                            "convert the UNet to diffusion_pytorch_model.safetensors")
    raise MissingFileError(unet_dir / SD_WEIGHT_NAMES[0], "UNet weights")


def load_sd_unet(path):
    """UNet2DConditionModel (float32) from a local SD1.5 folder in the diffusers layout."""
    from diffusers import UNet2DConditionModel

    unet_dir = find_unet_dir(path)
    cfg = read_json(unet_dir / CONFIG_NAME, "UNet config")
    if cfg.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise FadaError(f"{unet_dir / CONFIG_NAME}: a {cfg.get('_class_name')}, not a UNet2DConditionModel")
    state, source, sources = _sd_weight_state(unet_dir)
    try:
        unet = UNet2DConditionModel.from_config(cfg)
    except Exception as e:
        raise FadaError(f"{unet_dir / CONFIG_NAME}: cannot build the UNet ({type(e).__name__}: {e})") from None
    load_state_checked(unet, state, source, sources)
    return unet.float().eval()


def build_unet(unet_cfg, in_channels: int, sample_size: int = 64):
    """Randomly initialised UNet2DConditionModel from a ``UNetConfig``'s shape fields."""
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel(
            sample_size=int(sample_size), in_channels=int(in_channels), out_channels=int(in_channels),
            down_block_types=tuple(unet_cfg.down_block_types), up_block_types=tuple(unet_cfg.up_block_types),
            block_out_channels=tuple(int(c) for c in unet_cfg.block_out_channels),
            layers_per_block=int(unet_cfg.layers_per_block), attention_head_dim=int(unet_cfg.attention_head_dim),
            cross_attention_dim=int(unet_cfg.cross_attention_dim), norm_num_groups=int(unet_cfg.norm_num_groups),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise FadaError(f"unet: cannot build a UNet from these shape fields ({e})") from None


def unet_config_dict(unet) -> dict:
    """The JSON-able diffusers config of a UNet2DConditionModel (private '_' keys left out)."""
    return json.loads(json.dumps({k: v for k, v in dict(unet.config).items() if not k.startswith("_")}))


def unet_from_config_dict(config: dict, source):
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel.from_config(dict(config))
    except Exception as e:
        raise FadaError(f"{source}: cannot build the UNet ({type(e).__name__}: {e})") from None
