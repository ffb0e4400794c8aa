"""ReferenceNet (paper §3.1; docs/architecture.md): a 2-D UNet that encodes the reference frame and the motion
frames into a Bank.

It is a plain diffusers ``UNet2DConditionModel`` (an SD1.5 UNet at full scale) whose spatial self-attention
processors write their normed input tokens to the bank (see ``fada.models.attention``). It runs once per clip,
at timestep 0, on the clean latents of the reference frame and the M motion frames; the bank it returns is reused
at every denoising step. Its cross-attention (``attn2``, SD1.5's text attention) reads one all-zero audio token:
the reference carries no audio, and identical zero tokens give the same result whatever their number. A net whose
cross-attention reads identity tokens (Hallo's) is given them instead, per clip or per view.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .attention import AttnContext, Bank, BankWriteProcessor, install_processors, set_processor_backend


class ReferenceNet(nn.Module):
    def __init__(self, unet, attention_backend: str = "sdpa"):
        super().__init__()
        self.unet = unet
        install_processors(self.unet, BankWriteProcessor, attention_backend)

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    def set_attention_backend(self, backend: str) -> None:
        set_processor_backend(self, backend)

    def bank_layers(self) -> list[str]:
        """Bank keys (attn1 module paths), in module order."""
        return [m.processor.name for m in self.unet.modules() if isinstance(getattr(m, "processor", None),
                                                                            BankWriteProcessor)]

    def unused_parameter_names(self) -> list[str]:
        """Parameters that cannot influence the bank: everything after the last bank write (the last transformer
        block's attention/FF after its norm1, the last Transformer2DModel's proj_out, the output convs).
        Found by the order of execution of the modules, so it holds for any UNet layout."""
        order: list[str] = []
        hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: order.append(n))
                 for n, m in self.unet.named_modules() if not list(m.children())]
        try:
            c = self.unet.config
            # twice the smallest size: a GroupNorm with one channel per group needs > 1 value at the lowest level
            s = 2 ** len(c.block_out_channels)
            with torch.no_grad():
                p = next(self.unet.parameters())
                x = torch.zeros(1, c.in_channels, s, s, device=p.device, dtype=p.dtype)
                self.forward(x, return_sample=True)
        finally:
            for h in hooks:
                h.remove()
        last_attn1 = max(i for i, n in enumerate(order) if n.endswith("attn1.to_q"))
        # attn1's input (norm1 output) is what is written: norm1 and everything before it are used
        used = set(order[:last_attn1])
        unused = []
        for name, _ in self.unet.named_parameters():
            mod = name.rsplit(".", 1)[0]
            if mod not in used:
                unused.append("unet." + name)
        return unused

    def forward(self, ref_latents: Tensor, motion_latents: Optional[Tensor] = None, return_sample: bool = False,
                identity_tokens: Optional[Tensor] = None):
        """ref_latents (B, C, h, w), motion_latents (B, M, C, h, w) or None -> Bank (and the UNet output
        (B·(1+M), C, h, w) when ``return_sample``). identity_tokens: what ``attn2`` reads, (B, N, D) for every view
        of a clip or (B, 1+M, N, D) per view (see ``identity.cfg_writer_tokens``); None: one zero token."""
        if ref_latents.ndim != 4:
            raise ValueError(f"ref_latents must be (B, C, h, w), got {tuple(ref_latents.shape)}")
        b = ref_latents.shape[0]
        views = ref_latents[:, None]
        if motion_latents is not None and motion_latents.shape[1] > 0:
            m = motion_latents
            if m.ndim != 5 or m.shape[0] != b or m.shape[2:] != ref_latents.shape[1:]:
                raise ValueError(f"motion_latents must be (B, M, C, h, w) matching {tuple(ref_latents.shape)}, "
                                 f"got {tuple(motion_latents.shape)}")
            views = torch.cat([views, motion_latents.to(ref_latents.dtype)], dim=1)
        v = views.shape[1]
        x = views.reshape(b * v, *ref_latents.shape[1:])
        t = torch.zeros(b * v, device=x.device, dtype=x.dtype)
        if identity_tokens is None:
            context = torch.zeros(b * v, 1, self.cross_attention_dim, device=x.device, dtype=x.dtype)
        else:
            tok = identity_tokens.to(device=x.device, dtype=x.dtype)
            if tok.ndim == 3:
                tok = tok[:, None].expand(b, v, *tok.shape[1:])
            if tok.shape[:2] != (b, v):
                raise ValueError(f"identity_tokens must be (B={b}, N, D) or (B, {v}, N, D), got {tuple(tok.shape)}")
            context = tok.reshape(b * v, *tok.shape[2:])
        ctx = AttnContext(bank_out={}, views=v)
        sample = self.unet(x, t, encoder_hidden_states=context, cross_attention_kwargs={"fada_ctx": ctx},
                           return_dict=False)[0]
        # a copy: checkpoint recomputation rewrites ctx.bank_out, not this
        bank = Bank(dict(ctx.bank_out), b, v, latents=views.detach())
        return (bank, sample) if return_sample else bank
