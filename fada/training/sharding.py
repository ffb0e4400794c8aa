"""FSDP2 (through accelerate) for the training loop: full-tensor checkpoints from sharded state, and back.

Under FSDP the trained model's parameters are DTensors sharded across the processes. A checkpoint still holds
plain full tensors in the same files and layout as a DDP or single-process run (model.safetensors, optimizer
files indexed by the optimiser's parameter order, EMA by name), so a run can resume under DDP, FSDP or one process
and ``fada export`` reads it as usual. Gathering and scattering go through PyTorch's distributed-checkpoint state
dict API; every function here is collective (all ranks call it).

accelerate turns FSDP on only for GPU-family devices: on CPU processes it silently uses DDP. ``FADA_FSDP_CPU=1``
runs accelerate's FSDP2 path on CPU processes (gloo) anyway, which is how the test suite checks this code without
a GPU (two processes under torchrun).
"""

from __future__ import annotations

import os

import torch

FSDP_CPU_ENV = "FADA_FSDP_CPU"
WRAP_CLASSES = ("ResnetBlock2D", "Transformer2DModel", "TemporalAttention")
"""The sharding units (accelerate's fsdp_transformer_layer_cls_to_wrap; recipes/accelerate/8gpu_fsdp.yaml). Size-based
wrapping does not work here: it picks the UNets' ModuleLists, which FSDP2 refuses (containers without forward)."""


def force_fsdp_on_cpu(accelerator) -> None:
    """With FADA_FSDP_CPU=1 and several CPU processes: accelerate's FSDP2 instead of its DDP fallback."""
    if os.environ.get(FSDP_CPU_ENV) != "1" or accelerator.num_processes < 2 or accelerator.device.type != "cpu":
        return
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils import DistributedType

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=list(WRAP_CLASSES),
                                            state_dict_type="FULL_STATE_DICT", reshard_after_forward=True)
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


def is_fsdp(accelerator) -> bool:
    return bool(getattr(accelerator, "is_fsdp2", False)) or \
        str(getattr(accelerator.state, "distributed_type", "")).endswith("FSDP")


def keep_reference_net_gathered(model) -> int:
    """The ReferenceNet's units keep their gathered weights from forward to backward (FSDP2's
    reshard_after_forward=False for them alone). Its bank tokens leave each unit as a side output (written by the
    attention processors), not through the unit's return value, so FSDP2's pre-backward hook, which watches return
    values, would not gather the weights again before the gradient reaches them ("data is not allocated")."""
    from torch.distributed.fsdp import FSDPModule

    ref = getattr(model, "reference_net", None)
    n = 0
    for m in (ref.modules() if ref is not None else ()):
        if isinstance(m, FSDPModule):
            m.set_reshard_after_forward(False, recurse=False)
            n += 1
    return n


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model) -> dict[str, torch.Tensor]:
    """Every rank calls; rank 0 gets the full state dict on the CPU, the others an empty dict."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def full_optimizer_state(model, optimizer, names: list[str]) -> dict:
    """The optimiser's full state in ``optimizer.state_dict()``'s own layout (parameters by index in ``names``'
    order), so that it is saved exactly as a DDP run's is. Rank 0 gets it; the others an empty dict."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not sd:
        return {}
    index = {n: i for i, n in enumerate(names)}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in sd["param_groups"]]
    return {"state": {index[n]: slots for n, slots in sd["state"].items()}, "param_groups": groups}


def load_optimizer_state(model, optimizer, indexed: dict, names: list[str]) -> None:
    """Scatter a full, index-keyed optimiser state (as saved) onto the sharded optimiser. Every rank calls."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in indexed["param_groups"]]
    sd = {"state": {names[int(i)]: slots for i, slots in indexed["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, optim_state_dict=sd, options=_options())


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to a plain tensor (collective); a plain tensor unchanged."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``ref``: sharded the same way when ``ref`` is a DTensor."""
    if hasattr(ref, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(ref.device_mesh.device_type), ref.device_mesh, ref.placements)
    return full
