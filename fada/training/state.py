"""Pickle-free (de)serialisation of training state: optimiser, RNG and step counters.

Weights, optimiser moments and RNG states are tensors → safetensors; the rest (hyper-parameters, counters) → JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fada.errors import FadaError


def optimizer_to_files(optimizer: torch.optim.Optimizer, folder: Path, name: str = "optimizer",
                       state_dict: dict | None = None) -> None:
    """Split ``optimizer.state_dict()`` (or ``state_dict`` in its layout, e.g. gathered from FSDP shards) into
    ``name.safetensors`` (per-parameter tensors) + ``name.json``."""
    sd = state_dict if state_dict is not None else optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for slot, value in slots.items():
            key = f"{idx}.{slot}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    save_file(tensors, str(folder / f"{name}.safetensors"))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    (folder / f"{name}.json").write_text(json.dumps({"param_groups": groups, "scalars": scalars}))


def optimizer_state_from_files(folder: Path, name: str = "optimizer") -> tuple[dict, list[dict]]:
    """(per-index state, saved param_groups) of ``optimizer_to_files``' output."""
    meta_path, tensor_path = folder / f"{name}.json", folder / f"{name}.safetensors"
    for p in (meta_path, tensor_path):
        if not p.is_file():
            raise FadaError(f"checkpoint is incomplete: {p} is missing")
    meta = json.loads(meta_path.read_text())
    state: dict[int, dict] = {}
    for key, value in load_file(str(tensor_path)).items():
        idx, slot = key.split(".", 1)
        state.setdefault(int(idx), {})[slot] = value
    for key, value in meta["scalars"].items():
        idx, slot = key.split(".", 1)
        state.setdefault(int(idx), {})[slot] = value
    return state, meta["param_groups"]


def optimizer_from_files(optimizer: torch.optim.Optimizer, folder: Path, name: str = "optimizer") -> None:
    meta_path = folder / f"{name}.json"
    state, saved_groups = optimizer_state_from_files(folder, name)
    template = optimizer.state_dict()["param_groups"]
    groups = []
    for saved, current in zip(saved_groups, template):
        g = dict(saved)
        for k, v in current.items():  # restore tuple-typed hyper-parameters (betas) as the optimiser made them
            if isinstance(v, tuple) and k in g:
                g[k] = tuple(g[k])
        groups.append(g)
    if len(groups) != len(template):
        raise FadaError(f"{meta_path}: {len(groups)} parameter groups saved, the optimiser has {len(template)}")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_to_tensors(generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["torch_cuda"] = torch.cuda.get_rng_state()
    if generator is not None:
        out["generator"] = generator.get_state()
    return out


def rng_from_tensors(tensors: dict[str, torch.Tensor], generator: torch.Generator | None) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    if generator is not None and "generator" in tensors:
        generator.set_state(tensors["generator"])
