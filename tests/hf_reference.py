"""Build a transformers `Sam3Model` with the same dims as a conceptseg config (the parity reference)."""

from __future__ import annotations

import math

import torch
from transformers import Sam3Config, Sam3Model

from conceptseg.model.configs import SAM3Config


def hf_vision_config(config: SAM3Config) -> dict:
    """ViT + neck sub-config with our dims (LayerNorm eps explicit: HF's default 1e-6 is not SAM 3's 1e-5)."""
    vit, grid = config.vit, config.vit.grid_size
    return dict(
        backbone_config=dict(
            hidden_size=vit.width, intermediate_size=vit.mlp_dim, num_hidden_layers=vit.depth,
            num_attention_heads=vit.num_heads, image_size=vit.image_size, patch_size=vit.patch_size,
            window_size=vit.window_size, global_attn_indexes=list(vit.global_layers),
            pretrain_image_size=vit.pretrain_grid * vit.patch_size, layer_norm_eps=vit.layer_norm_eps,
        ),
        fpn_hidden_size=config.d_model, backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        layer_norm_eps=config.layer_norm_eps,
    )


def hf_config_for(config: SAM3Config) -> Sam3Config:
    """The Hugging Face config with our dims; LayerNorm eps set explicitly (HF's default 1e-6 is not SAM 3's)."""
    text, d = config.text, config.d_model
    common = dict(hidden_size=d, num_attention_heads=config.num_heads, intermediate_size=config.ffn_dim,
                  layer_norm_eps=config.layer_norm_eps)
    return Sam3Config(
        vision_config=hf_vision_config(config),
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


def hf_tracker_kwargs(config: SAM3Config) -> dict:
    """Sub-configs shared by the image and the video HF tracker, with our dims."""
    vit, d, t = config.vit, config.d_model, config.tracker
    vision = hf_vision_config(config)
    prompt = {
        "hidden_size": d, "image_size": vit.image_size, "patch_size": vit.patch_size,
        "mask_input_channels": t.mask_in_chans,
    }
    decoder = {
        "hidden_size": d, "mlp_dim": t.decoder_mlp_dim, "num_hidden_layers": t.decoder_depth,
        "num_attention_heads": t.decoder_heads,
        "attention_downsample_rate": t.attention_downsample, "num_multimask_outputs": t.num_multimask_outputs,
        "iou_head_depth": t.iou_head_depth, "iou_head_hidden_dim": t.iou_head_hidden_dim,
        "dynamic_multimask_stability_delta": t.dynamic_multimask_stability_delta,
        "dynamic_multimask_stability_thresh": t.dynamic_multimask_stability_thresh,
    }
    return {"vision_config": vision, "prompt_encoder_config": prompt, "mask_decoder_config": decoder}


def with_tied_fourier_matrix(model):
    """HF keeps two copies of the prompt encoder's Fourier matrix; a converted checkpoint has them equal."""
    model.shared_image_embedding.positional_embedding.copy_(model.prompt_encoder.shared_embedding.positional_embedding)
    return model
