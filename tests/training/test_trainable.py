"""Trainable groups and LoRA: every parameter in one group, adapters start as the identity, merging is exact."""

import pytest
import torch

from fada.config import load_recipe
from fada.models.avatar import build_avatar_net
from fada.training.trainable import (GROUPS, add_lora, check_choice, has_lora, is_lora_name, merge_lora,
                                     param_group, select_trainable)
from tests.fixtures import TINY_TEST_MODEL


@pytest.fixture
def student():
    torch.manual_seed(0)
    r = load_recipe("tiny-fast", TINY_TEST_MODEL, stage="distill")
    return build_avatar_net(r.model, student=True)


def inputs(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    C, (W, L, D) = net.latent_channels, net.audio_feature_shape
    return dict(z=torch.randn(2, C, 4, 16, 16, generator=g), t=torch.tensor([900, 300]),
                ref=torch.randn(2, C, 16, 16, generator=g), motion=torch.randn(2, 1, C, 16, 16, generator=g),
                audio=torch.randn(2, 4, W, L, D, generator=g), cfg_scales=torch.tensor([[6.5, 2.0], [3.0, 1.5]]))


def call(net, x):
    with torch.no_grad():
        return net(x["z"], x["t"], x["audio"], None, cfg_scales=x["cfg_scales"], ref_latents=x["ref"],
                   motion_latents=x["motion"])


def test_groups_partition_the_student(student):
    names = [n for n, _ in student.named_parameters()]
    groups = {g: [n for n in names if param_group(n) == g] for g in GROUPS}
    assert sum(map(len, groups.values())) == len(names) and all(groups.values())
    assert all(n.startswith("reference_net.") for n in groups["reference_net"])
    assert all(".temporal." in n for n in groups["temporal"])
    assert any(n.startswith("audio_proj.") for n in groups["audio"]) and any(".attn2." in n for n in groups["audio"])
    assert any(n.startswith("cfg.") for n in groups["cfg"])
    picked = {n for n, _ in select_trainable(student, ["audio", "cfg"])}
    assert picked == set(groups["audio"]) | set(groups["cfg"])
    assert len(select_trainable(student, ["all"])) == len(names)


def test_choice_problems():
    assert check_choice(["all"]) == [] and check_choice(["lora", "audio", "cfg"]) == []
    assert "unknown group 'unet'" in check_choice(["unet"])[0]
    assert check_choice(["all", "audio"]) and check_choice(["lora", "spatial"]) and check_choice([])


def test_lora_starts_as_identity_and_merges_exactly(student):
    x = inputs(student)
    before = call(student, x)
    n = add_lora(student, rank=4)
    assert n > 0 and has_lora(student)
    torch.testing.assert_close(call(student, x), before, rtol=0, atol=0)  # B = 0: the same net
    adapted = {n for n, _ in student.named_parameters() if is_lora_name(n)}
    assert any(".attn1.to_q.lora_A" in n for n in adapted) and any(".temporal.to_q.lora_A" in n for n in adapted)
    assert any(".conv1.lora_A" in n for n in adapted) and not any(n.startswith("reference_net.") for n in adapted)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    adapted_out = call(student, x)
    assert (adapted_out - before).abs().max() > 1e-3  # the adapters act
    # independent check of one adapted layer: W + (alpha/r) B A
    path = next(n for n in adapted if ".attn1.to_q.lora_A" in n).split(".lora_A")[0]
    layer = student.get_submodule(path)
    expected = layer.base_layer.weight + layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    assert merge_lora(student) == len({n.split(".lora_")[0] for n in adapted})
    assert not has_lora(student)
    torch.testing.assert_close(student.get_submodule(path).weight, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(call(student, x), adapted_out, rtol=1e-4, atol=1e-5)


def test_groups_of_a_hallo_net():
    """Hallo's parts: its audio blocks (and the audio projection) are 'audio'; its attn2, which reads identity
    tokens, the identity projection and the face locator are 'spatial'; the motion modules 'temporal'."""
    import json

    from fada.training.trainable import select_trainable
    from tests.models.hallo.conftest import build_hallo_avatar, golden_dir

    net = build_hallo_avatar(json.loads((golden_dir() / "golden_meta.json").read_text()))
    audio = {n for n, _ in select_trainable(net, ["audio"])}
    spatial = {n for n, _ in select_trainable(net, ["spatial"])}
    temporal = {n for n, _ in select_trainable(net, ["temporal"])}
    assert audio and all(n.startswith("audio_proj.") or ".audio." in n for n in audio)
    assert any(".audio.attn_lip." in n for n in audio) and not any(".attn2." in n for n in audio)
    assert any(".attn2." in n for n in spatial) and any(n.startswith("identity_proj.") for n in spatial)
    assert any(".face_locator." in n for n in spatial)
    assert temporal and all(".temporal." in n for n in temporal)
    assert not (audio & spatial) and not (audio & temporal) and not (spatial & temporal)


def test_lora_reaches_hallos_audio_blocks_and_motion_modules():
    import json

    from fada.training.trainable import add_lora, select_trainable
    from tests.models.hallo.conftest import build_hallo_avatar, golden_dir

    net = build_hallo_avatar(json.loads((golden_dir() / "golden_meta.json").read_text()))
    add_lora(net, rank=2)
    lora = [n for n, _ in select_trainable(net, ["lora"])]
    assert any(".temporal.blocks.0.attentions.1.to_q.lora_" in n for n in lora)
    assert any(".audio.attn_lip.to_k.lora_" in n for n in lora)
