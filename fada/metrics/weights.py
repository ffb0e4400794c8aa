"""Locating and reading the metric networks' weight files.

The metric networks are standard, published networks; their weights are files the user downloads once and puts in
one folder, named on the command line with ``--weights-dir``. Nothing here downloads anything. The expected file
names are the upstream ones:

=========  ==========================================  =====================================================
metric     file                                        upstream
=========  ==========================================  =====================================================
fid        ``pt_inception-2015-12-05-6726825d.pth``     pytorch-fid (mseitzer), plain state dict
fvd (-R)   ``resnet-50-kinetics.pth``                   kenshohara 3D-ResNets (Kinetics), ``{'state_dict': ...}``
fvd_i      ``i3d_torchscript.pt``                       StyleGAN-V / fvd-comparison TorchScript I3D
sync       ``syncnet_v2.model``                         joonson/syncnet_python, state dict with S's bare keys
=========  ==========================================  =====================================================

Pickled files are only ever read with ``torch.load(..., weights_only=True)`` (tensors and plain containers, no
code); the I3D file is TorchScript (``torch.jit.load``), which does not unpickle Python objects either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional

import torch
from torch import Tensor, nn

from fada.errors import FadaError, MissingFileError

FID_INCEPTION = "pt_inception-2015-12-05-6726825d.pth"
FVD_RESNET50 = "resnet-50-kinetics.pth"
FVD_I3D = "i3d_torchscript.pt"
SYNCNET = "syncnet_v2.model"

#: metric name -> the file it needs (metrics not listed need no weights).
WEIGHT_FILES: dict[str, str] = {
    "fid": FID_INCEPTION,
    "fvd": FVD_RESNET50,
    "fvd_i": FVD_I3D,
    "sync": SYNCNET,
}

# BatchNorm counters that checkpoints saved before PyTorch 0.4.1 do not have; they do not affect inference.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def locate(weights_dir, filename: str, metric: str) -> Path:
    """Path of ``filename`` inside ``weights_dir``; a one-line MissingFileError naming the file if it is not there."""
    hint = f"put {filename} in the folder given with --weights-dir"
    if weights_dir is None:
        raise MissingFileError(filename, f"{metric} weights", f"no --weights-dir given; {hint}")
    folder = Path(weights_dir)
    if not folder.is_dir():
        raise MissingFileError(folder, "--weights-dir folder", f"{metric} needs {filename} inside it")
    path = folder / filename
    if not path.is_file():
        raise MissingFileError(path, f"{metric} weights", hint)
    return path


def weights_for(metric: str, weights_dir) -> Path:
    """The weights file of ``metric`` (a key of WEIGHT_FILES) inside ``weights_dir``."""
    if metric not in WEIGHT_FILES:
        raise FadaError(f"metric {metric!r} needs no weights file (known: {', '.join(sorted(WEIGHT_FILES))})")
    return locate(weights_dir, WEIGHT_FILES[metric], metric)


def available(weights_dir) -> dict[str, Optional[str]]:
    """For every weighted metric: None if its file is present, else the one-line reason it cannot run."""
    out: dict[str, Optional[str]] = {}
    for metric in WEIGHT_FILES:
        try:
            weights_for(metric, weights_dir)
            out[metric] = None
        except MissingFileError as e:
            out[metric] = str(e)
    return out


def check_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, what, "pass the file, or its folder with --weights-dir")
    return path


def torch_load_safe(path, what: str):
    """``torch.load`` restricted to tensors and plain containers (weights_only=True); errors name the file."""
    path = check_file(path, what)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (refused object), RuntimeError (damaged zip), EOFError ...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FadaError(f"{path}: not a readable {what} state dict ({type(e).__name__}: {first[:200]})") from None


def strip_prefix(state: Mapping[str, Tensor], prefixes: Iterable[str]) -> dict[str, Tensor]:
    """Remove the first matching prefix (e.g. ``module.`` from DataParallel, ``__S__.``) from every key."""
    prefixes = tuple(prefixes)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p):]
                break
        out[key] = value
    return out


def load_into(module: nn.Module, state: Mapping[str, Tensor], path, what: str) -> nn.Module:
    """Strict load: every parameter/buffer must be present with its shape, no unknown keys.

    Only BatchNorm ``num_batches_tracked`` counters may be missing (old checkpoints lack them).
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FadaError(f"{path}: {what} file does not hold a state dict of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]}")
    if problems:
        raise FadaError(f"{path}: not the expected {what} weights ({'; '.join(problems)})")
    with torch.no_grad():
        for k, v in own.items():
            if k in state:
                v.copy_(state[k].to(v.dtype))
    module.eval()
    return module


class WeightedNet:
    """Base of the metric networks' runners: a network loaded from its weights file (or given), in eval mode on
    ``device``, run in batches. Subclasses set ``name`` (the metric), ``weights_file``, ``default_batch_size`` and
    ``load_weights``."""

    name: str
    weights_file: str
    default_batch_size: int = 8

    @staticmethod
    def load_weights(path):  # each subclass binds its loader
        raise TypeError("WeightedNet subclasses must define load_weights")

    def __init__(self, weights_path=None, *, model=None, batch_size: int | None = None, device="cpu"):
        import torch

        if model is None:
            if weights_path is None:
                from fada.errors import FadaError

                raise FadaError(f"{type(self).__name__} needs a weights file or a model")
            model = self.load_weights(weights_path)
        self.model = model.eval().to(device) if hasattr(model, "eval") else model
        self.device = torch.device(device)
        self.batch_size = int(batch_size or self.default_batch_size)

    @classmethod
    def from_weights_dir(cls, weights_dir, **kw):
        return cls(locate(weights_dir, cls.weights_file, cls.name), **kw)
