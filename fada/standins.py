"""Random-weight stand-ins for the models users bring, written in the real layouts by the real libraries.

``write_sd15(root)`` writes a diffusers Stable Diffusion 1.5 folder (``unet/`` and ``vae/``, each config.json +
diffusion_pytorch_model.safetensors) with SD1.5's own configs; ``write_wav2vec2(root)`` a transformers
``Wav2Vec2ForCTC`` folder (config.json, preprocessor_config.json, model.safetensors) with wav2vec2-base-960h's
config, lm_head included. ``widths`` / ``small=True`` shrink the channel widths and keep the topology (4 levels,
2 layers per block, cross-attention at three levels, DownBlock2D last, 8 heads), so tests run the full recipes'
code paths at CI size. Used by ``benchmarks/rehearse_full.py`` and the tests; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch

SD15_UNET_CONFIG = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
"""stable-diffusion-v1-5/unet/config.json (859.52 M parameters)."""

SD15_VAE_CONFIG = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
"""stable-diffusion-v1-5/vae/config.json (83.65 M parameters)."""

WAV2VEC2_BASE_CONFIG = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "feat_extract_norm": "group", "do_stable_layer_norm": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "vocab_size": 32, "ctc_loss_reduction": "sum",
}
"""facebook/wav2vec2-base-960h's config.json (the fields that decide the architecture; 94.4 M parameters)."""

SMALL_SD_WIDTHS = (32, 32, 64, 64)
SMALL_WAV2VEC2 = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                  "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}


def write_sd15(root, widths: Optional[Sequence[int]] = None, cross_attention_dim: Optional[int] = None,
               seed: int = 0) -> Path:
    """A diffusers SD1.5 folder with random weights; ``widths`` replaces the UNet's and VAE's block widths."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = Path(root)
    unet_cfg, vae_cfg = dict(SD15_UNET_CONFIG), dict(SD15_VAE_CONFIG)
    if widths is not None:
        unet_cfg["block_out_channels"] = list(widths)
        vae_cfg["block_out_channels"] = [int(widths[0])] * 4
        unet_cfg["norm_num_groups"] = vae_cfg["norm_num_groups"] = min(32, int(widths[0]))
    if cross_attention_dim is not None:
        unet_cfg["cross_attention_dim"] = int(cross_attention_dim)
    torch.manual_seed(seed)
    UNet2DConditionModel.from_config(unet_cfg).save_pretrained(root / "unet", safe_serialization=True)
    AutoencoderKL.from_config(vae_cfg).save_pretrained(root / "vae", safe_serialization=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "unet": ["diffusers", "UNet2DConditionModel"],
                                                       "vae": ["diffusers", "AutoencoderKL"]}, indent=1))
    return root


def write_wav2vec2(root, small: bool = False, seed: int = 0) -> Path:
    """A transformers Wav2Vec2ForCTC folder with random weights (wav2vec2-base-960h's config unless ``small``)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    root = Path(root)
    cfg = dict(WAV2VEC2_BASE_CONFIG)
    if small:
        cfg.update(SMALL_WAV2VEC2)
    torch.manual_seed(seed)
    Wav2Vec2ForCTC(Wav2Vec2Config(**cfg)).save_pretrained(root, safe_serialization=True)
    (root / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000},
        indent=1))
    return root
