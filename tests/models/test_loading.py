"""SD1.5 UNet folders (diffusers layout) and our part folders: loading and one-line errors naming the file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fada.errors import FadaError, MissingFileError
from fada.models.loading import (find_unet_dir, load_sd_unet, load_weights, read_config, save_part,
                                 unet_config_dict, unet_from_config_dict)

from .test_nets import tiny_unet

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture()
def sd(tmp_path):
    unet = tiny_unet().eval()
    unet.save_pretrained(tmp_path / "sd" / "unet", safe_serialization=True)
    return tmp_path / "sd", unet


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loads_sd_folder_and_unet_folder(sd):
    root, unet = sd
    assert _same(load_sd_unet(root), unet)
    assert _same(load_sd_unet(root / "unet"), unet)
    assert find_unet_dir(root) == root / "unet"


def test_loads_sharded_and_fp16_variant(sd, tmp_path):
    root, unet = sd
    sharded = tmp_path / "sharded"
    unet.save_pretrained(sharded / "unet", safe_serialization=True, max_shard_size="200KB")
    assert (sharded / "unet" / (WEIGHTS + ".index.json")).is_file()
    assert _same(load_sd_unet(sharded), unet)
    fp16 = tmp_path / "fp16"
    unet.save_pretrained(fp16 / "unet", safe_serialization=True, variant="fp16")
    loaded = load_sd_unet(fp16)
    assert next(loaded.parameters()).dtype == torch.float32
    w = dict(unet.named_parameters())["conv_in.weight"]
    assert torch.allclose(dict(loaded.named_parameters())["conv_in.weight"], w, atol=1e-2)


def test_missing_folder_config_and_weights(sd, tmp_path):
    root, _ = sd
    with pytest.raises(MissingFileError, match="nowhere"):
        load_sd_unet(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingFileError, match=r"unet/config\.json"):
        load_sd_unet(empty)
    (root / "unet" / WEIGHTS).unlink()
    with pytest.raises(MissingFileError, match=WEIGHTS) as e:
        load_sd_unet(root)
    assert "\n" not in str(e.value)


def test_pickled_weights_refused(sd):
    root, _ = sd
    (root / "unet" / WEIGHTS).rename(root / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(FadaError, match="pickled"):
        load_sd_unet(root)


def test_corrupted_and_wrong_shape_weights_name_the_file(sd):
    root, _ = sd
    f = root / "unet" / WEIGHTS
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(FadaError, match=WEIGHTS) as e:
        load_sd_unet(root)
    assert "\n" not in str(e.value)
    f.write_bytes(good)
    state = load_file(str(f))
    state["conv_in.weight"] = torch.zeros(1, 2, 3, 3)
    save_file(state, str(f))
    with pytest.raises(FadaError, match=r"diffusion_pytorch_model\.safetensors.*conv_in\.weight"):
        load_sd_unet(root)
    del state["conv_in.weight"]
    save_file(state, str(f))
    with pytest.raises(FadaError, match="missing key"):
        load_sd_unet(root)


def test_bad_config_json(sd):
    root, _ = sd
    (root / "unet" / "config.json").write_text("{not json")
    with pytest.raises(FadaError, match=r"config\.json"):
        load_sd_unet(root)


def test_part_round_trip_and_errors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    save_part(tmp_path / "p", {"width": 4}, net, dtype=torch.float16)
    assert read_config(tmp_path / "p") == {"width": 4}
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    load_weights(other, tmp_path / "p")
    assert torch.allclose(other[0].weight, net[0].weight, atol=1e-3)
    wrong = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.LayerNorm(5))
    with pytest.raises(FadaError, match=r"model\.safetensors: 0\.weight has shape \(4, 3\)"):
        load_weights(wrong, tmp_path / "p")
    shutil.rmtree(tmp_path / "p")
    with pytest.raises(MissingFileError, match=r"config\.json"):
        read_config(tmp_path / "p")


def test_unet_config_dict_round_trip():
    unet = tiny_unet()
    cfg = unet_config_dict(unet)
    json.dumps(cfg)
    again = unet_from_config_dict(cfg, "x")
    assert unet_config_dict(again) == cfg
