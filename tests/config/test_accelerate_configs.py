"""The shipped accelerate launch configs are valid accelerate configs, and the FSDP one wraps modules the net has."""

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "accelerate").glob("*.yaml"))


def test_four_configs_ship():
    assert {p.name for p in CONFIGS} == {"1gpu.yaml", "8gpu_ddp.yaml", "8gpu_fsdp.yaml", "multinode_ddp.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_in_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    expected = {"1gpu.yaml": ("NO", 1), "8gpu_ddp.yaml": ("MULTI_GPU", 8), "8gpu_fsdp.yaml": ("FSDP", 8),
                "multinode_ddp.yaml": ("MULTI_GPU", 16)}[path.name]
    assert (str(cfg.distributed_type).split(".")[-1], cfg.num_processes) == expected


def test_fsdp_wraps_modules_the_net_has():
    from accelerate.commands.config.config_args import load_config_from_file

    from fada.config import load_recipe
    from fada.models.avatar import build_avatar_net
    from fada.training.sharding import WRAP_CLASSES

    cfg = load_config_from_file(str(next(p for p in CONFIGS if p.name == "8gpu_fsdp.yaml")))
    names = cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert tuple(names) == WRAP_CLASSES and cfg.fsdp_config["fsdp_version"] == 2
    net = build_avatar_net(load_recipe("tiny-teacher", stage="teacher").model)
    present = {type(m).__name__ for m in net.modules()}
    assert set(names) <= present
