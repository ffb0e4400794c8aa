"""Hallo's net.pth -> fada's parts: every key mapped or ignored with a reason, every fada weight filled, the
widths of Hallo's audio blocks, and the Hallo-shaped AvatarNet saved and loaded as a fada folder."""

from __future__ import annotations

import re

import pytest
import torch

from fada.errors import FadaError
from fada.models.audio_blocks import hallo_audio_layout
from fada.models.hallo_keys import DEAD_MOTION, PE_TABLE, map_hallo_state
from fada.models.net_parts import HALLO_PARTS, resolve_parts

PARTS = ("reference_net", "denoising_net", "audio_proj", "identity_proj")


def _expected(net):
    return {p: getattr(net, p).state_dict().keys() for p in PARTS}


def test_every_key_mapped_or_ignored(hallo_net, hallo_state):
    import json

    from .conftest import golden_dir

    mapped, ignored = map_hallo_state(hallo_state, _expected(hallo_net))
    n_keys = len(json.loads((golden_dir() / "net_keys.json").read_text())["keys"])  # 2648 in the shipped goldens
    assert sum(len(v) for v in mapped.values()) + len(ignored) == len(hallo_state) == n_keys
    # ignored: the lowest level's motion modules (never run) and the sinusoidal tables of the others
    dead = {k for k, r in ignored.items() if r == DEAD_MOTION}
    assert {re.match(r"denoising_unet\.(\w+\.\d+\.motion_modules\.\d+)\.", k).group(1) for k in dead} == {
        "down_blocks.3.motion_modules.0", "down_blocks.3.motion_modules.1", "up_blocks.0.motion_modules.0",
        "up_blocks.0.motion_modules.1", "up_blocks.0.motion_modules.2"}
    pe = {k for k, r in ignored.items() if r == PE_TABLE}
    assert len(pe) == 32 and all(k.endswith(".pos_encoder.pe") for k in pe)
    assert len([k for k in dead if k.endswith(".pos_encoder.pe")]) == 10  # 42 tables in all
    assert set(ignored) == dead | pe
    # every fada parameter is filled, except the ReferenceNet's output convs (Hallo's reference UNet has none)
    for part in PARTS:
        missing = set(getattr(hallo_net, part).state_dict()) - set(mapped[part])
        want = {"unet.conv_norm_out.weight", "unet.conv_norm_out.bias", "unet.conv_out.weight",
                "unet.conv_out.bias"} if part == "reference_net" else set()
        assert missing == want, part
    assert {"unet.conv_out.weight", "unet.conv_norm_out.bias"} <= set(hallo_net.frozen_reference_parameters)


def test_unmapped_keys_are_one_line_error(hallo_net, hallo_state):
    state = dict(hallo_state)
    state["denoising_unet.down_blocks.0.audio_modules.0.transformer_blocks.1.attn1.to_q.weight"] = torch.zeros(1)
    state["controlnet.conv.weight"] = torch.zeros(1)
    with pytest.raises(FadaError) as e:
        map_hallo_state(state, _expected(hallo_net))
    msg = str(e.value)
    assert "\n" not in msg and "2 key(s)" in msg and "controlnet.conv.weight" in msg
    assert "transformer_blocks.1.attn1" in msg


def test_position_table_is_checked(hallo_state):
    state = dict(hallo_state)
    k = next(k for k in state if k.endswith(".pos_encoder.pe"))
    state[k] = state[k] + 0.01
    with pytest.raises(FadaError, match="sinusoidal"):
        map_hallo_state(state)


def test_audio_block_widths_follow_block_inputs():
    """Hallo's audio block works at the width of its block's input: with distinct level widths the first layer
    of a down block is narrower than its map, and an up block's layers all take the level below's width."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(32, 64, 96, 96), norm_num_groups=32, cross_attention_dim=16,
                                attention_head_dim=8, sample_size=8)
    layout = hallo_audio_layout(unet)
    assert layout["down_blocks.0.attentions.0"] == (32, 0) and layout["down_blocks.0.attentions.1"] == (32, 0)
    assert layout["down_blocks.1.attentions.0"] == (32, 1) and layout["down_blocks.1.attentions.1"] == (64, 1)
    assert layout["down_blocks.2.attentions.0"] == (64, 2) and layout["down_blocks.2.attentions.1"] == (96, 2)
    assert layout["mid_block.attentions.0"] == (96, 3)
    assert {layout[f"up_blocks.1.attentions.{j}"] for j in range(3)} == {(64, 2)}
    assert {layout[f"up_blocks.2.attentions.{j}"] for j in range(3)} == {(32, 1)}
    assert {layout[f"up_blocks.3.attentions.{j}"] for j in range(3)} == {(32, 0)}


def test_parts_config_errors_are_one_line():
    for bad, match in (({"temporal": {"kind": "lstm"}}, "parts.temporal.kind"),
                       ({"audio": {"kind": "hallo", "width": 3}}, "unknown key 'width'"),
                       ({"attn2": "identity"}, "leaves the audio unread"),
                       ({"bank_pairing": "shuffled"}, "parts.bank_pairing"),
                       ({"colour": 1}, "unknown key 'colour'")):
        with pytest.raises(FadaError, match=match) as e:
            resolve_parts(bad)
        assert "\n" not in str(e.value)
    assert resolve_parts(HALLO_PARTS)["temporal"]["motion_prefix"] is True


@torch.no_grad()
def test_saved_folder_round_trip(hallo_net, golden, tmp_path):
    """The Hallo-shaped AvatarNet is an ordinary fada model folder: parts config and identity projection saved,
    loaded strictly, same predictions."""
    from fada.models.avatar import AvatarNet

    from .test_parity import predictions

    hallo_net.save_pretrained(tmp_path / "hallo")
    again = AvatarNet.from_pretrained(tmp_path / "hallo", attention_backend="sdpa")
    assert again.denoising_net.parts == hallo_net.denoising_net.parts
    assert again.part_configs()["denoising_net"]["parts"]["bank_dtype"] == "float16"
    assert (tmp_path / "hallo" / "identity_proj" / "model.safetensors").is_file()
    a, b = predictions(hallo_net, golden, steps=(0,)), predictions(again, golden, steps=(0,))
    assert all(torch.equal(a[k], b[k]) for k in a)
