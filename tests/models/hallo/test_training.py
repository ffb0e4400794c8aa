"""The Hallo-shaped AvatarNet trains through fada's forward: with gradient checkpointing, gradients reach the
parts Hallo adds (audio blocks, motion modules, face locator, identity and audio projections, the ReferenceNet
through the bank's reference view and motion prefix), and checkpointing does not change them."""

from __future__ import annotations

import copy

import torch

from .test_parity import make_portrait


def _loss_and_grads(net, golden, checkpointing: bool):
    net = copy.deepcopy(net).train()
    if checkpointing:
        net.enable_gradient_checkpointing()
    lat = golden["out.ref_latents"]
    z = golden["step1.latents_in"]
    eps = net(z, torch.tensor([500.0]), golden["in.audio_emb"], None, ref_latents=lat[:1],
              motion_latents=lat[1:][None], portrait=make_portrait(golden))
    loss = eps.pow(2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in net.named_parameters() if p.requires_grad}


def test_gradients_reach_hallo_parts(hallo_net, golden):
    loss, grads = _loss_and_grads(hallo_net, golden, checkpointing=True)
    assert torch.isfinite(loss)

    def reached(pattern):
        hits = [g for n, g in grads.items() if pattern in n]
        return bool(hits) and all(g is not None and g.abs().sum() > 0 for g in hits)

    for pattern in ("down_blocks.1.attentions.0.audio.attn_lip.to_k", "mid_block.attentions.0.temporal.blocks.0",
                    "denoising_net.face_locator.conv_out", "identity_proj.proj", "audio_proj.mlp.0",
                    "reference_net.unet.down_blocks.0.attentions.0.transformer_blocks.0.norm1"):
        assert reached(pattern), pattern
    _, plain = _loss_and_grads(hallo_net, golden, checkpointing=False)
    for n, g in grads.items():
        if g is not None:
            torch.testing.assert_close(g, plain[n], rtol=1e-4, atol=1e-6)
