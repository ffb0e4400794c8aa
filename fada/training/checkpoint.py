"""Training checkpoints: ``step-XXXXXXX/`` folders written atomically, keep-last-N, resume discovery.

Layout of one checkpoint (all pickle-free):
    model.safetensors                 the trained module's full state dict
    net_config.json                   the AvatarNet's own configs (top + parts), so that export and distillation
                                      rebuild it without the SD1.5 folder it was first made from
    ema.safetensors, ema.json         EMA shadow weights keyed by parameter name (when EMA is on)
    optimizer.safetensors, .json      optimiser moments and hyper-parameters
    rng.safetensors                   every rank's torch CPU/CUDA and training-generator states ("rank{r}.<name>")
    state.json                        step, LR-scheduler state, anything the task adds
    recipe.yaml                       the resolved recipe the run was started with
The folder is assembled under a temporary name and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from fada.errors import FadaError
from fada.training.state import optimizer_from_files, optimizer_to_files, rng_from_tensors, rng_to_tensors
from fada.utils.io import publish_tree

_STEP_RE = re.compile(r"^step-(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and _STEP_RE.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(_STEP_RE.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """'auto' → latest in run_dir (or None), 'none' → None, else a checkpoint folder that must exist."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if path.is_dir() and not (path / "state.json").is_file():  # a run folder: take its latest checkpoint
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    if not (path / "state.json").is_file():
        raise FadaError(f"train.resume: {resume} is not a checkpoint folder (no state.json)")
    return path


class EMAWeights:
    """Exponential moving average of named parameters (decay warms up as (1+n)/(10+n), capped at ``decay``)."""

    def __init__(self, named_params, decay: float, device=None):
        self.decay = decay
        self.num_updates = 0
        self.params = dict(named_params)
        self.shadow = {n: p.detach().float().clone() if hasattr(p, "device_mesh")  # FSDP: a shard, in place
                       else p.detach().float().to(device or p.device, copy=True) for n, p in self.params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for name, p in self.params.items():
            s = self.shadow[name]
            s.lerp_(p.detach().float() if hasattr(s, "device_mesh")
                    else p.detach().to(s.device, torch.float32, non_blocking=True), 1.0 - d)
        self.num_updates += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Full tensors by name (sharded FSDP shadows are gathered: then every rank must call)."""
        from fada.training.sharding import full_tensor

        return {n: full_tensor(t).contiguous() for n, t in self.shadow.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], num_updates: int) -> None:
        missing = set(self.shadow) - set(tensors)
        if missing:
            raise FadaError(f"EMA weights are missing {len(missing)} parameters, e.g. {sorted(missing)[0]}")
        from fada.training.sharding import like

        for n in self.shadow:
            self.shadow[n].copy_(like(tensors[n].to(torch.float32), self.shadow[n]))
        self.num_updates = num_updates

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        """Write the EMA weights into ``module`` (whose parameter names match)."""
        own = dict(module.named_parameters())
        for n, t in self.shadow.items():
            own[n].copy_(t.to(own[n].dtype))


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, ema: EMAWeights | None = None,
                    generator: torch.Generator | None = None, recipe_yaml: str | None = None,
                    extra: dict | None = None, keep_last: int | None = None,
                    rng_states: list[dict] | None = None, model_state: dict | None = None,
                    optimizer_state: dict | None = None, ema_state: dict | None = None) -> Path:
    """Write ``step-XXXXXXX/`` under ``run_dir`` (see the module docstring). ``rng_states``: every rank's
    ``rng_to_tensors`` (gathered by the training loop), else this process's own as rank 0. ``model_state`` /
    ``optimizer_state`` / ``ema_state``: full states gathered beforehand (FSDP), used instead of reading the
    objects."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=run_dir))
    try:
        if model_state is not None:
            save_file({k: v.contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        else:
            save_model(model, str(tmp / "model.safetensors"))
        if hasattr(model, "top_config") and hasattr(model, "part_configs"):
            (tmp / "net_config.json").write_text(json.dumps({"top": model.top_config(),
                                                             "parts": model.part_configs()}, indent=1))
        if ema is not None:
            save_file(ema_state if ema_state is not None else ema.state_tensors(), str(tmp / "ema.safetensors"))
            (tmp / "ema.json").write_text(json.dumps({"decay": ema.decay, "num_updates": ema.num_updates}))
        if optimizer is not None:
            optimizer_to_files(optimizer, tmp, state_dict=optimizer_state)
        states = rng_states if rng_states is not None else [rng_to_tensors(generator)]
        save_file({f"rank{r}.{k}": v.contiguous() for r, st in enumerate(states) for k, v in st.items()},
                  str(tmp / "rng.safetensors"))
        state = {"step": step, "scheduler": scheduler.state_dict() if scheduler is not None else None}
        state.update(extra or {})
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        if recipe_yaml is not None:
            (tmp / "recipe.yaml").write_text(recipe_yaml)
        publish_tree(tmp)
        if final.exists():  # re-saving the same step (e.g. final step == a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if keep_last:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer=None, scheduler=None,
                    ema: EMAWeights | None = None, generator: torch.Generator | None = None, rank: int = 0) -> dict:
    """Restore everything ``save_checkpoint`` wrote into live objects; returns state.json's content. ``rank``
    picks this process's random state (see ``rank_rng``)."""
    path = Path(path)
    state_file, model_file = path / "state.json", path / "model.safetensors"
    for f in (state_file, model_file):
        if not f.is_file():
            raise FadaError(f"checkpoint is incomplete: {f} is missing")
    state = json.loads(state_file.read_text())
    try:
        missing, unexpected = load_model(model, str(model_file), strict=False)
    except Exception as e:  # shape mismatch and friends: say which file
        raise FadaError(f"{model_file}: does not fit this model ({str(e).splitlines()[0]})") from None
    if missing or unexpected:
        some = sorted(missing or unexpected)[0]
        raise FadaError(f"{model_file}: does not fit this model ({len(missing)} missing and "
                        f"{len(unexpected)} unexpected tensors, e.g. {some})")
    if optimizer is not None:
        optimizer_from_files(optimizer, path)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema_file = path / "ema.safetensors"
        if ema_file.is_file():
            meta = json.loads((path / "ema.json").read_text())
            ema.load_tensors(load_file(str(ema_file)), meta["num_updates"])
    rng_file = path / "rng.safetensors"
    if rng_file.is_file():
        rank_rng(load_file(str(rng_file)), generator, rank)
    return state


def rank_rng(tensors: dict[str, torch.Tensor], generator: torch.Generator | None, rank: int) -> None:
    """Restore rank ``rank``'s random state from a checkpoint's rng tensors. A rank the checkpoint has no state for
    (a run resumed on more processes, or a file written before per-rank states: unprefixed names, rank 0's) starts
    from rank 0's state reseeded by its rank, so that no two ranks draw the same noise."""
    own = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"rank{rank}.")}
    if own:
        rng_from_tensors(own, generator)
        return
    first = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("rank0.")} or \
        {k: v for k, v in tensors.items() if not k.startswith("rank")}
    rng_from_tensors(first, generator)
    if rank:
        base = int(torch.randint(0, 2 ** 62, (1,), generator=generator)) if generator is not None else \
            int(torch.randint(0, 2 ** 62, (1,)))
        torch.manual_seed(base + 2 * rank)
        if generator is not None:
            generator.manual_seed(base + 2 * rank + 1)


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module, use_ema: bool = True) -> None:
    """Load a checkpoint's weights (EMA ones when present and asked for) into ``model``; no training state."""
    path = Path(path)
    load_checkpoint(path, model)
    if use_ema and (path / "ema.safetensors").is_file():
        tensors = load_file(str(path / "ema.safetensors"))
        ema = EMAWeights([(n, p) for n, p in model.named_parameters() if n in tensors], decay=0.0)
        ema.load_tensors(tensors, 0)
        ema.copy_to(model)
