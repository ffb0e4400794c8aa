"""Which parameters a run trains: named module groups of the AvatarNet, and LoRA adapters through peft.

Groups (every parameter belongs to exactly one):
    reference_net   the ReferenceNet
    spatial         the denoising net's SD1.5 layers (convolutions, self-attention, feed-forward, time embedding),
                    and the portrait-condition layers of nets that have them (identity projection and identity
                    cross-attention, face locator: Hallo's)
    audio           the audio projection and the denoising net's audio layers: its audio cross-attention (attn2),
                    or its audio blocks for nets whose attn2 reads identity tokens (Hallo's)
    temporal        the denoising net's temporal attention
    cfg             the student's CFG conditioning (tokens, CFG layers, time-embedding cond_proj; Eq. 10)
Plus ``lora``: low-rank adapters (peft's LoRA, as LCM-LoRA and PeRFlow ship theirs) on the denoising net's
attention, feed-forward, projection and convolution layers; their base weights stay frozen. ``merge_lora`` folds
them back into plain weights, so an exported model has no adapters.
"""

from __future__ import annotations

import torch

from fada.errors import FadaError

GROUPS = ("reference_net", "spatial", "audio", "temporal", "cfg")
CHOICES = ("all", "lora") + GROUPS
# LCM-LoRA's target modules for an SD1.5 UNet (regexes over module names inside the denoising net's UNet)
# plus, for nets with Hallo's parts, the audio blocks' attentions and the AnimateDiff motion modules' attentions
LORA_TARGETS = (r".*\.(attn1|attn2|attn_full|attn_face|attn_lip)\.(to_q|to_k|to_v|to_out\.0)$"
                r"|.*\.temporal\.(to_q|to_k|to_v|to_out)$"
                r"|.*\.temporal\.blocks\.\d+\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)$"
                r"|.*\.(proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|conv1|conv2|conv_shortcut|time_emb_proj)$"
                r"|.*(downsamplers|upsamplers)\.0\.conv$")


def param_group(name: str, attn2: str = "audio") -> str:
    """The group of an AvatarNet parameter name (see the module docstring); ``attn2``: what the denoising net's
    cross-attention reads (its ``parts["attn2"]``)."""
    if name.startswith("reference_net."):
        return "reference_net"
    den = name.startswith("denoising_net.")
    if name.startswith("audio_proj.") or (den and (".audio." in name or (attn2 == "audio" and ".attn2." in name))):
        return "audio"
    if name.startswith("cfg.") or ".cfg." in name or "time_embedding.cond_proj" in name:
        return "cfg"
    if ".temporal." in name:
        return "temporal"
    return "spatial"


def check_choice(groups: list[str]) -> list[str]:
    """Problems with a ``trainable`` list (for the recipe's one ConfigError)."""
    bad = [g for g in groups if g not in CHOICES]
    if bad:
        return [f"trainable: unknown group {bad[0]!r} (choose from {', '.join(CHOICES)})"]
    if not groups:
        return ["trainable: empty; name at least one group (or 'all')"]
    if "all" in groups and len(groups) > 1:
        return ["trainable: 'all' already trains every group; list it alone"]
    if "lora" in groups and "spatial" in groups:
        return ["trainable: 'lora' adapts the spatial layers whose base weights 'spatial' would train too; "
                "choose one"]
    return []


def net_attn2(net) -> str:
    """What a net's denoising cross-attention reads: 'audio' (fada's nets) or 'identity' (Hallo's)."""
    parts = getattr(getattr(getattr(net, "module", net), "denoising_net", None), "parts", None)
    return parts["attn2"] if parts else "audio"


def is_lora_name(name: str) -> bool:
    return ".lora_" in name


def select_trainable(net, groups: list[str], exclude: set[str] = frozenset()) -> list[tuple[str, torch.nn.Parameter]]:
    """Named parameters of ``net`` in ``groups`` ('all', or group names and 'lora'), minus ``exclude``."""
    out = []
    attn2 = net_attn2(net)
    for name, p in net.named_parameters():
        if name in exclude:
            continue
        if is_lora_name(name):
            keep = "lora" in groups
        else:
            keep = "all" in groups or param_group(name.replace(".base_layer.", "."), attn2) in groups
        if keep:
            out.append((name, p))
    return out


def add_lora(net, rank: int, alpha: float | None = None, dropout: float = 0.0) -> int:
    """Inject LoRA adapters of ``rank`` into the denoising net (in place); returns the adapter parameter count.
    B starts at zero, so the adapted net equals the net it was made from."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise FadaError(f"distill.lora_rank: must be >= 1 to train 'lora', got {rank}")
    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank), lora_dropout=dropout,
                     target_modules=LORA_TARGETS, init_lora_weights=True)
    unet = net.denoising_net.unet
    inject_adapter_in_model(cfg, unet)
    return sum(p.numel() for n, p in unet.named_parameters() if is_lora_name(n))


def has_lora(net) -> bool:
    return any(is_lora_name(n) for n, _ in net.named_parameters())


@torch.no_grad()
def merge_lora(net) -> int:
    """Fold every LoRA adapter into its base layer and put the plain layer back; returns how many were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for parent in list(net.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge(safe_merge=True)
                setattr(parent, child_name, child.get_base_layer())
                merged += 1
    return merged
