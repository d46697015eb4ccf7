"""Build a transformers `Sam3Model` with the same dims as a conceptseg config (the parity reference)."""

from __future__ import annotations

import math

import torch
from transformers import Sam3Config, Sam3Model

from conceptseg.model.configs import SAM3Config


def hf_config_for(config: SAM3Config) -> Sam3Config:
    """The Hugging Face config with our dims; LayerNorm eps set explicitly (HF's default 1e-6 is not SAM 3's)."""
    vit, text, d = config.vit, config.text, config.d_model
    grid = vit.grid_size
    common = dict(hidden_size=d, num_attention_heads=config.num_heads, intermediate_size=config.ffn_dim,
                  layer_norm_eps=config.layer_norm_eps)
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                hidden_size=vit.width, intermediate_size=vit.mlp_dim, num_hidden_layers=vit.depth,
                num_attention_heads=vit.num_heads, image_size=vit.image_size, patch_size=vit.patch_size,
                window_size=vit.window_size, global_attn_indexes=list(vit.global_layers),
                pretrain_image_size=vit.pretrain_grid * vit.patch_size, layer_norm_eps=vit.layer_norm_eps,
            ),
            fpn_hidden_size=d, backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
            layer_norm_eps=config.layer_norm_eps,
        ),
        text_config=dict(
            model_type="clip_text_model", vocab_size=text.vocab_size, hidden_size=text.width,
            intermediate_size=text.mlp_dim, projection_dim=text.projection_dim, num_hidden_layers=text.depth,
            num_attention_heads=text.num_heads, max_position_embeddings=text.context_length, hidden_act="gelu",
            layer_norm_eps=text.layer_norm_eps,
        ),
        geometry_encoder_config=dict(num_layers=config.geometry_layers, roi_size=config.roi_size, **common),
        detr_encoder_config=dict(num_layers=config.fusion_layers, **common),
        detr_decoder_config=dict(num_layers=config.decoder_layers, num_queries=config.num_queries, **common),
        mask_decoder_config=dict(hidden_size=d, num_attention_heads=config.num_heads,
                                 layer_norm_eps=config.layer_norm_eps),
    )


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter with deterministic, well-scaled random values (norm weights around 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() >= 2:
                fan_in = math.prod(param.shape[1:])
                param.copy_(noise / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)
    return module


def hf_model_for(config: SAM3Config, seed: int = 0) -> Sam3Model:
    return randomize_(Sam3Model(hf_config_for(config)), seed).eval()
